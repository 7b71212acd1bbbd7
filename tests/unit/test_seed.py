"""Seed ISOs read back with pycdlib, are byte-identical across runs, and carry the identity."""
import json
import os
import time
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from builder import cli, profile, secret, seed

ROOT = Path(__file__).resolve().parents[2]
HOWTO = ROOT / "profiles" / "howto.toml"
KEY = "3f9a1c5e7b2d4086" * 4


@pytest.fixture
def howto():
    return profile.load(HOWTO)


def test_seed_reads_back_as_a_nocloud_volume(howto, tmp_path):
    [path] = seed.write_seeds(howto, seed.Keys(KEY), tmp_path, ["loadb1"])
    label, files = seed.read_iso(path)
    assert label == "cidata"
    assert sorted(files) == ["appliance.json", "meta-data", "network-config", "user-data"]
    assert b'local-hostname: "loadb1"' in files["meta-data"]
    assert files["user-data"].startswith(b"#cloud-config\n")
    assert b'addresses: ["192.168.0.103/24"]' in files["network-config"]
    data = json.loads(files["appliance.json"])
    assert (data["node"], data["role"], data["secret"]) == ("loadb1", "director", KEY)
    assert profile.parse(data["cluster"]) == howto


def test_real_server_seed_has_no_secret(howto, tmp_path):
    [path] = seed.write_seeds(howto, seed.Keys(KEY), tmp_path, ["webserver1"])
    _, files = seed.read_iso(path)
    assert "secret" not in json.loads(files["appliance.json"])
    assert KEY.encode() not in path.read_bytes()


def test_same_profile_gives_byte_identical_isos_whatever_the_clock_and_zone(howto, tmp_path, monkeypatch):
    first = seed.write_seeds(howto, seed.Keys(KEY), tmp_path / "a")
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    time.sleep(1.1)
    try:
        second = seed.write_seeds(howto, seed.Keys(KEY), tmp_path / "b")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert len(first) == 4
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def instance_id(cluster, name, key=KEY):
    meta = seed.seed_files(cluster, cluster.node(name), seed.Keys(key))["meta-data"].decode()
    return meta.split('instance-id: "')[1].split('"')[0]


def test_instance_id_changes_with_the_nodes_identity_only(howto):
    assert instance_id(howto, "loadb1") == instance_id(profile.load(HOWTO), "loadb1")
    moved = replace(howto, directors=(replace(howto.directors[0], address=IPv4Address("192.168.0.110")),
                                      howto.directors[1]))
    assert instance_id(moved, "loadb1") != instance_id(howto, "loadb1")
    assert instance_id(howto, "loadb1", "1a" * 32) != instance_id(howto, "loadb1")
    assert instance_id(howto, "loadb1").startswith("howto-loadb1-")


def test_secret_is_generated_once_0600_and_reused(howto, tmp_path):
    first = secret.load_or_create(howto, HOWTO, tmp_path)
    path = tmp_path / "howto.authkey"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first) == 64 and not secret.problems(first)
    assert secret.load_or_create(howto, HOWTO, tmp_path) == first


@pytest.mark.parametrize("weak, why", [("password", "well-known"), ("abc", "at least 16"),
                                       ("aaaaaaaaaaaaaaaaaaaa", "guessable"),
                                       ("has spaces in it, see", "spaces")])
def test_weak_secret_is_refused(howto, tmp_path, weak, why):
    path = tmp_path / "howto.authkey"
    path.write_text(weak + "\n")
    path.chmod(0o600)
    with pytest.raises(secret.SecretError, match=why):
        secret.load_or_create(howto, HOWTO, tmp_path)


def test_secret_readable_by_others_is_refused(howto, tmp_path):
    path = tmp_path / "howto.authkey"
    path.write_text(KEY)
    path.chmod(0o644)
    with pytest.raises(secret.SecretError, match="chmod 600"):
        secret.load_or_create(howto, HOWTO, tmp_path)


def test_profile_secret_file_is_relative_to_the_profile(howto, tmp_path):
    named = replace(howto, heartbeat=replace(howto.heartbeat, secret_file="keys/hb.key"))
    fake_profile = tmp_path / "p.toml"
    with pytest.raises(secret.SecretError, match="does not exist"):
        secret.load_or_create(named, fake_profile, tmp_path / "unused")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/hb.key").write_text(KEY)
    os.chmod(tmp_path / "keys/hb.key", 0o600)
    assert secret.load_or_create(named, fake_profile, tmp_path / "unused") == KEY


def test_seed_command_writes_every_node_and_no_temp_files(tmp_path, capsys):
    rc = cli.main(["seed", str(HOWTO), "--out", str(tmp_path / "seeds"), "--secrets", str(tmp_path / "s")])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "seeds").iterdir()) == [
        "loadb1.iso", "loadb2.iso", "webserver1.iso", "webserver2.iso"]


def test_render_command_previews_and_writes_a_tree(tmp_path, capsys):
    assert cli.main(["render", str(HOWTO), "webserver1", "--secrets", str(tmp_path)]) == 0
    assert "==> /etc/sysctl.d/60-lvs-realserver.conf" in capsys.readouterr().out
    out = tmp_path / "tree"
    assert cli.main(["render", str(HOWTO), "loadb1", "--out", str(out), "--secrets", str(tmp_path)]) == 0
    assert (out / "etc/ha.d/ldirectord.cf").exists()
    assert not (tmp_path / "howto.authkey").exists()  # a preview creates no secret


def test_unknown_node_is_a_clear_error(capsys):
    assert cli.main(["render", str(HOWTO), "loadb9"]) == 1
    assert "choose one of: loadb1, loadb2, webserver1, webserver2" in capsys.readouterr().err


def test_gathered_keys_are_made_once_and_every_seed_names_the_update_key(howto, tmp_path):
    """`builder seed` makes what is missing and keeps it: a second gather reads the same keys, and
    each node's seed carries the public half of the key bundles are signed with (issue 25)."""
    first = seed.Keys.gather(howto, HOWTO, tmp_path / "s")
    again = seed.Keys.gather(howto, HOWTO, tmp_path / "s", create=False)
    assert first == again and first.secret and first.update_key.startswith("ssh-ed25519 ")
    assert first.update_key == (tmp_path / "s" / "update-key.pub").read_text().strip()
    assert (tmp_path / "s" / "update-key").stat().st_mode & 0o777 == 0o600
    for node in howto.nodes:
        assert seed.appliance(howto, node, first)["update_key"] == first.update_key
    assert "update_key" not in seed.appliance(howto, howto.nodes[0], seed.Keys(KEY))
