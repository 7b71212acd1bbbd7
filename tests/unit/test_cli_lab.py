"""`python -m builder lab`: options after the node are read, never swallowed or ignored."""
from __future__ import annotations

import pytest

from builder import cli
from lab import up


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


@pytest.mark.parametrize("argv", [["lab", "block", "lvs-a", "--nic", "1"], ["lab", "--nic", "1", "block", "lvs-a"]])
def test_nic_is_honoured_before_or_after_the_node(cluster, argv):
    assert cli.main(argv) == 0
    assert cluster.vms["lvs-a"].calls == [("block", 1)]


def test_a_stray_word_is_refused_not_ignored(cluster, capsys):
    assert cli.main(["lab", "block", "lvs-a", "now"]) == 1
    assert "takes a node and options, not 'now'" in capsys.readouterr().err
    assert cluster.vms["lvs-a"].calls == []
