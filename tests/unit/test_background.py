"""The boot lane's low-weight cgroup (lab/background.py), on fake cgroup trees."""
from __future__ import annotations

from lab import background


def test_cgroup_v1_gets_small_cpu_shares(tmp_path):
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.shares").write_text("1024\n")
    group = background.weighted_cgroup(v1, tmp_path / "v2")
    assert group == v1 / background.NAME
    assert int((group / "cpu.shares").read_text()) == background.BACKGROUND_SHARES < 1024
    assert background.weighted_cgroup(v1, tmp_path / "v2") == group  # made once, reused


def test_cgroup_v2_enables_the_cpu_controller_then_a_small_weight(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    group = background.weighted_cgroup(tmp_path / "no-v1", tmp_path)
    assert group == tmp_path / background.NAME
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu\n"  # the kernel adds it to the list
    assert int((group / "cpu.weight").read_text()) == background.BACKGROUND_WEIGHT < 100


def test_no_cpu_controller_means_none(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    assert background.weighted_cgroup(tmp_path / "no-v1", tmp_path) is None
    assert background.weighted_cgroup(tmp_path / "no-v1", tmp_path / "missing") is None


def test_usage_without_a_command():
    assert background.main([]) == 2 and background.main(["--"]) == 2
