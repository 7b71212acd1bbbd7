"""builder/remote.py: verified SSH and the cluster's one-table status."""
from __future__ import annotations

import contextlib
from pathlib import Path

from builder import profile, remote
from tests.conftest import ROOT


def test_ssh_never_trusts_on_first_use_and_never_prompts():
    c = profile.load(ROOT / "profiles/howto.toml")
    argv = remote.ssh_argv(c.node("loadb1"), remote.Reach(Path("/s/howto.known_hosts")), "appliance status --json")
    opts = [argv[i + 1] for i, w in enumerate(argv) if w == "-o"]
    assert "StrictHostKeyChecking=yes" in opts and "BatchMode=yes" in opts
    assert "UserKnownHostsFile=/s/howto.known_hosts" in opts and "HostKeyAlias=loadb1" in opts
    assert argv[-2:] == ["root@192.168.0.103", "appliance status --json"]


def test_the_cluster_table_flags_an_unreachable_node_and_two_vip_holders():
    c = profile.load(ROOT / "profiles/howto.toml")
    director = {"stack": "heartbeat", "state": "all", "answering": True, "vips": ["192.168.0.105"],
                "sync": ["master"], "services": [{"protocol": "TCP", "vip": "192.168.0.105", "port": 80,
                "scheduler": "rr", "real_servers": [{"address": "192.168.0.101", "weight": 1, "active": 2,
                                                     "inactive": 5}]}]}
    found = {"loadb1": dict(director, peer_heard_age=3.2), "loadb2": dict(director, state="HUNG", answering=False),
             "webserver1": {"vips": ["192.168.0.105"]}, "webserver2": "webserver2 (192.168.0.102): timed out"}
    text = remote.cluster_table(c, found)
    assert "loadb2       director   192.168.0.104   heartbeat: HUNG NOT ANSWERING" in text
    assert "webserver2   realserver 192.168.0.102   UNREACHABLE" in text
    assert "WARNING: 2 directors hold the VIP (loadb1, loadb2)" in text
    assert "sync master, peer heard 3 s ago" in text and "sync master, peer never heard" in text
    assert "loadb1 TCP 192.168.0.105:80 rr: 192.168.0.101 w1 2a/5i" in text


def test_shared_connections_live_in_a_directory_only_this_user_can_enter(tmp_path, monkeypatch):
    from builder import cli
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    mine = cli._control_dir()
    assert mine == tmp_path / f"appliance-ssh-{__import__('os').getuid()}" and oct(mine.stat().st_mode)[-3:] == "700"
    assert cli._control_dir() == mine  # the next run finds the connections this one left
    mine.chmod(0o777)  # opened to others: a fresh private one instead
    other = cli._control_dir()
    assert other != mine and oct(other.stat().st_mode)[-3:] == "700"
    other.rmdir()


def test_a_control_directory_too_long_for_a_socket_shares_nothing_but_reaches_the_node(tmp_path):
    """ssh failed every command (exit 255, "unix_listener: path ... too long") in a lab named
    after dual-stack-keepalived.toml; a long TMPDIR (macOS: /var/folders/...) does the same."""
    node = profile.load(ROOT / "profiles" / "howto.toml").node("loadb1")
    short = remote.Reach(Path("kh"), control=Path("/tmp/appliance-ssh-0"))
    assert any(o.startswith("ControlPath=/tmp/appliance-ssh-0/") for o in remote.ssh_argv(node, short, "true"))
    long = remote.Reach(Path("kh"), control=Path("/tmp/appliance-ssh-lvs-appliance-test-dual-stack-keepalived"))
    argv = remote.ssh_argv(node, long, "true")
    assert not any(o.startswith(("ControlPath", "ControlMaster")) for o in argv) and argv[-1] == "true"


def test_the_labs_shared_connections_fit_a_socket_for_every_shipped_profile(tmp_path):
    from lab.cluster import Cluster
    for path in sorted((ROOT / "profiles").glob("*.toml")):
        c = Cluster(path, tmp_path / path.stem, "tcg", netns=f"lvs-appliance-test-{path.stem}")
        reach = c.reach
        assert reach.shares(), path.name
        with contextlib.suppress(OSError):  # a lab run's sockets may be in it
            reach.control.rmdir()
