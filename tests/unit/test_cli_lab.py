"""`python -m lab`: each action a command of its own, options anywhere after it; the old
`python -m builder lab ...` spellings still reach it, and the builder never imports the lab."""
from __future__ import annotations

import ast
import dataclasses

import pytest

from builder import cli as builder_cli
from lab import cli, up
from tests.conftest import ROOT


class FakeMachine:
    def __init__(self):
        self.calls = []

    def block(self, nic):
        self.calls.append(("block", nic))


class FakeCluster:
    def __init__(self):
        self.vms = {"lvs-a": FakeMachine()}


@pytest.fixture
def cluster(monkeypatch):
    c = FakeCluster()
    monkeypatch.setattr(up, "attached", lambda: c)
    return c


@pytest.mark.parametrize("argv", [["block", "lvs-a", "--nic", "1"], ["block", "--nic", "1", "lvs-a"]])
def test_nic_is_honoured_before_or_after_the_node(cluster, argv):
    assert cli.main(argv) == 0
    assert cluster.vms["lvs-a"].calls == [("block", 1)]


def test_a_stray_word_is_refused_not_ignored(cluster, capsys):
    with pytest.raises(SystemExit):
        cli.main(["block", "lvs-a", "now"])
    assert "unrecognized arguments: now" in capsys.readouterr().err
    assert cluster.vms["lvs-a"].calls == []


@pytest.mark.parametrize("old, new", [
    (["up", "profiles/howto.toml"], ["up", "profiles/howto.toml"]),
    (["lab", "block", "lvs-a", "--nic", "1"], ["block", "lvs-a", "--nic", "1"]),
    (["lab", "--nic", "1", "block", "lvs-a"], ["block", "--nic", "1", "lvs-a"]),
    (["lab", "-v", "--timeout", "90", "run", "lvs-a", "ipvsadm", "-L", "-n"],
     ["run", "-v", "--timeout", "90", "lvs-a", "ipvsadm", "-L", "-n"]),
])
def test_the_old_builder_spellings_map_to_the_lab(old, new):
    assert builder_cli.lab_argv(old) == new


def test_the_builder_never_imports_the_lab():
    for path in sorted((ROOT / "builder").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "lab" or n.startswith("lab.") for n in names), f"{path.name} imports {names}"


def test_the_lab_watches_every_profile_itself_and_never_a_receiver_outside_it():
    from ipaddress import IPv4Address

    from builder import profile
    from lab.cluster import Cluster
    client = IPv4Address("172.20.40.254")
    howto = profile.load(ROOT / "profiles/howto.toml")
    for spec in (howto, dataclasses.replace(howto, logging=profile.Logging("192.0.2.9:19532"))):
        watched = Cluster.with_monitoring(spec, client)
        assert watched.logging.remote == "172.20.40.254:19532"
        assert watched.metrics.enabled and any(client in n for n in watched.metrics.scrapers)
