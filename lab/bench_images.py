"""Image benchmark: cold and warm build time, sizes, boot-to-ready under QEMU, reproducibility.

Prints figures; never fails on a threshold. Run with `make bench-images`.
Two cold builds per role (separate mkosi caches, shared package downloads) are compared by
sha256; if they differ, the files that differ in the root file systems are listed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from builder import contract, image, profile, secret, seed
from builder.files import sha256
from builder.run import run
from lab import accel as accel_probe
from lab.machine import Machine
from lab.paths import ROOT

BENCH = ROOT / "build" / "bench"
SEED_NODE = {"director": "loadb1", "webserver": "webserver1"}


def timed_build(role: str, out: Path, work: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    image.build(role, out=out, work=work)
    return time.monotonic() - started


def regions(img: Path) -> dict[str, tuple[int, int]]:
    """Partition name -> byte offset and size."""
    return {name: (p.start, p.size) for name, p in image.partitions(img).items()}


def region_hash(img: Path, offset: int, size: int) -> str:
    """sha256 of `size` bytes of img from `offset`."""
    h = hashlib.sha256()
    with open(img, "rb") as f:
        f.seek(offset)
        while size > 0:
            chunk = f.read(min(size, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            size -= len(chunk)
    return h.hexdigest()


def differing_partitions(a: Path, b: Path) -> list[str]:
    pa, pb = regions(a), regions(b)
    if pa != pb:
        return ["partition table"]
    return [name for name, (off, size) in pa.items() if region_hash(a, off, size) != region_hash(b, off, size)]


def tree_hashes(img: Path) -> dict[str, str]:
    offset, size = regions(img)["root"]
    with tempfile.TemporaryDirectory() as mnt:
        run(["mount", "-o", f"ro,loop,offset={offset},sizelimit={size}", img, mnt])
        try:
            hashes = {}
            for dirpath, dirs, files in os.walk(mnt):
                for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
                    p = Path(dirpath) / name
                    rel = "/" + str(p.relative_to(mnt))
                    st = p.lstat()
                    data = os.readlink(p).encode() if p.is_symlink() else (
                        p.read_bytes() if p.is_file() else b"")
                    hashes[rel] = hashlib.sha256(data + f"{st.st_mode}:{st.st_mtime_ns}".encode()).hexdigest()
            return hashes
        finally:
            run(["umount", mnt])


def differing_files(a: Path, b: Path) -> list[str]:
    ha, hb = tree_hashes(a), tree_hashes(b)
    return sorted(p for p in ha.keys() | hb.keys() if ha.get(p) != hb.get(p))


def compressed_size(img: Path) -> int:
    proc = subprocess.run(["zstd", "-T0", "-3", "-q", "-c", str(img)], stdout=subprocess.PIPE, check=True)
    return len(proc.stdout)


def boot_to_ready(role: str, img: Path, accel: str) -> float:
    cluster = profile.load(ROOT / "profiles" / "howto.toml")
    with tempfile.TemporaryDirectory() as tmp:
        key = secret.load_or_create(cluster, ROOT / "profiles" / "howto.toml", Path(tmp) / "s")
        [iso] = seed.write_seeds(cluster, seed.Keys(key), Path(tmp), [SEED_NODE[role]])
        vm = Machine(SEED_NODE[role], img, BENCH / "boot", seed=iso, accel=accel)
        try:
            vm.start()
            vm.wait_until_ready(contract.BOOT_TIMEOUT)
            return time.monotonic() - vm.started_at
        finally:
            vm.shutdown()


def main() -> int:
    shutil.rmtree(BENCH, ignore_errors=True)
    accel = accel_probe.probe()
    rows: list[dict[str, Any]] = []
    for role in image.ROLES:
        print(f"== {role}: cold build 1", flush=True)
        cold = timed_build(role, BENCH / "a", BENCH / "work-a")
        print(f"== {role}: warm rebuild", flush=True)
        warm = timed_build(role, BENCH / "warm", BENCH / "work-a")
        # second clean build: fresh mkosi cache, package downloads reused
        (BENCH / "work-b" / "cache").mkdir(parents=True, exist_ok=True)
        shutil.copytree(BENCH / "work-a" / "cache" / "packages", BENCH / "work-b" / "cache" / "packages",
                        dirs_exist_ok=True)
        print(f"== {role}: cold build 2 (reproducibility)", flush=True)
        cold2 = timed_build(role, BENCH / "b", BENCH / "work-b")
        a, b = BENCH / "a" / f"{role}.img", BENCH / "b" / f"{role}.img"
        identical = sha256(a) == sha256(b)
        parts = [] if identical else differing_partitions(a, b)
        diff = differing_files(a, b) if "root" in parts else []
        st = a.stat()
        ready = boot_to_ready(role, a, accel)
        rows.append(dict(role=role, cold=cold, cold2=cold2, warm=warm, raw=st.st_size,
                         allocated=st.st_blocks * 512, zstd=compressed_size(a), ready=ready,
                         identical=identical, parts=parts, diff=diff))
        shutil.rmtree(BENCH / "work-b", ignore_errors=True)
    mib = 2 ** 20
    print(f"\nimage benchmark ({accel}, {os.cpu_count()} cores)")
    print(f"{'image':10} {'cold s':>7} {'warm s':>7} {'raw MiB':>8} {'used MiB':>9} {'zstd MiB':>9} "
          f"{'ready s':>8}  identical")
    for r in rows:
        print(f"{r['role']:10} {r['cold']:7.0f} {r['warm']:7.0f} {r['raw'] / mib:8.0f} "
              f"{r['allocated'] / mib:9.0f} {r['zstd'] / mib:9.0f} {r['ready']:8.1f}  "
              f"{'yes' if r['identical'] else 'no'}")
    for r in rows:
        if r["parts"]:
            print(f"\n{r['role']}: differs in {', '.join(r['parts'])} between two clean builds")
        if r["diff"]:
            print(f"{r['role']}: {len(r['diff'])} files differ in the root file system:")
            for p in r["diff"][:40]:
                print(f"  {p}")
    (BENCH / "images.json").write_text(json.dumps(rows, indent=2))
    return 0
