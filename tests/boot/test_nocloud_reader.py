"""A standard cloud-init NoCloud reader accepts our seed: Debian's own cloud-init (the
release's package, unpacked, not installed) reads instance-id, hostname, network-config."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from builder import profile, seed
from builder.run import run
from lab.paths import ROOT

CACHE = ROOT / "build" / "cache" / "cloud-init"
READ = """
import json, sys
from cloudinit import helpers
from cloudinit.sources import DataSourceNoCloud as NC
ds = NC.DataSourceNoCloud(sys_cfg={}, distro=None,
                          paths=helpers.Paths({"cloud_dir": sys.argv[1], "run_dir": sys.argv[1] + "/run"}))
ok = ds._get_data()
print(json.dumps({"ok": ok, "meta": ds.metadata, "net": ds.network_config,
                  "user": ds.userdata_raw.decode()}))
"""


@pytest.fixture(scope="module")
def cloudinit() -> Path:
    """Debian's cloud-init package, downloaded once and unpacked under build/cache."""
    root = CACHE / "root"
    if not (root / "usr/lib/python3/dist-packages/cloudinit").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        run(["apt-get", "download", "cloud-init"], cwd=str(CACHE))
        deb = sorted(CACHE.glob("cloud-init_*.deb"))[-1]
        run(["dpkg-deb", "-x", deb, root])
    return root / "usr/lib/python3/dist-packages"


@pytest.mark.parametrize("name", ["loadb1", "webserver2"])
def test_cloud_init_nocloud_reads_our_seed(cloudinit, tmp_path, name):
    cluster = profile.load(ROOT / "profiles" / "howto.toml")
    [iso] = seed.write_seeds(cluster, seed.Keys("3f9a1c5e7b2d4086" * 4), tmp_path / "iso", [name])
    label, files = seed.read_iso(iso)
    assert label == "cidata"
    seed_dir = tmp_path / "cloud" / "seed" / "nocloud"  # what cloud-init reads once mounted
    seed_dir.mkdir(parents=True)
    for fname, data in files.items():
        (seed_dir / fname).write_bytes(data)
    out = run([sys.executable, "-c", READ, tmp_path / "cloud"],
              env=dict(os.environ, PYTHONPATH=str(cloudinit))).stdout
    got = json.loads(out.splitlines()[-1])
    node = cluster.node(name)
    assert got["ok"] is True
    assert got["meta"]["local-hostname"] == name
    assert got["meta"]["instance-id"].startswith(f"howto-{name}-")
    assert got["net"]["ethernets"]["eth0"]["addresses"] == [f"{node.address}/24"]
    assert got["user"].startswith("#cloud-config")
