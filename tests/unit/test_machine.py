"""The lab's Machine, where it needs no QEMU: when a killed QEMU counts as gone."""
from pathlib import Path

import pytest

from lab.machine import Machine


@pytest.mark.parametrize("state, threads, running", [
    ("S (sleeping)", 9, True),
    ("Z (zombie)", 4, True),    # the leader is a zombie, its vCPU threads still hold the disk lock
    ("Z (zombie)", 1, False),   # every thread has exited: the lock is free
])
def test_a_killed_qemu_is_gone_only_when_its_last_thread_is(tmp_path, state, threads, running):
    vm = Machine("lvs-a", Path("director.img"), tmp_path)
    vm.dir.mkdir(parents=True)
    (vm.dir / "qemu.pid").write_text("4242\n")
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "status").write_text(f"Name:\tqemu-system-x86\nState:\t{state}\nThreads:\t{threads}\n")
    assert vm.is_running(proc) is running
    (proc / "4242" / "status").unlink()
    assert not vm.is_running(proc)  # reaped


def test_a_directors_qemu_runs_at_a_higher_priority_inside_its_namespace(tmp_path, monkeypatch):
    from lab import cluster, net
    from lab.cluster import DIRECTOR_NICE, Cluster
    from lab.paths import ROOT
    monkeypatch.setattr(cluster.paths, "image", lambda role: Path(f"{role}.img"))  # none built
    c = Cluster(ROOT / "profiles" / "redundant.toml", tmp_path, "tcg", netns=net.suite_netns("redundant"))
    vms = c.machines(tmp_path / "seeds", None)
    director, real = vms["lvs-a"].command(), vms["app1"].command()
    assert director[:6] == ["ip", "netns", "exec", "lvs-appliance-test-redundant", "nice", "-n"]
    assert director[6] == str(DIRECTOR_NICE) and int(director[6]) < 0
    assert real[4] == "qemu-system-x86_64"   # real servers at the host's normal priority
    # two suites side by side never share a namespace
    assert len({net.suite_netns(p.stem) for p in (ROOT / "profiles").glob("*.toml")}) > 1
