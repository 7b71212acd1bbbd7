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


def test_every_qemu_runs_inside_its_suites_namespace_at_one_priority(tmp_path, monkeypatch):
    """Directors at a higher priority starved a real server into a boot panic (2026-12-01)."""
    from lab import cluster, net
    from lab.cluster import Cluster
    from lab.paths import ROOT
    monkeypatch.setattr(cluster.paths, "image", lambda role: Path(f"{role}.img"))  # none built
    c = Cluster(ROOT / "profiles" / "redundant.toml", tmp_path, "tcg", netns=net.suite_netns("redundant"))
    vms = c.machines(tmp_path / "seeds", None)
    for name in ("lvs-a", "app1"):
        assert vms[name].command()[:5] == ["ip", "netns", "exec", "lvs-appliance-test-redundant",
                                          "qemu-system-x86_64"], name
    # two suites side by side never share a namespace
    assert len({net.suite_netns(p.stem) for p in (ROOT / "profiles").glob("*.toml")}) > 1


class _Agent:
    """A guest agent that answers with this boot's journal of appliance-ready."""

    def __init__(self, journal: str):
        self.journal, self.commands = journal, []

    def ping(self) -> bool:
        return True

    def exec(self, command: str, timeout: float = 60) -> tuple[int, str]:
        self.commands.append(command)
        return 0, self.journal


def _booted(tmp_path, monkeypatch, journal: str) -> Machine:
    from lab import machine
    monkeypatch.setattr(machine, "READY_JOURNAL_EVERY", 0.0)
    vm = Machine("app2", Path("webserver.img"), tmp_path)
    vm.dir.mkdir(parents=True)
    vm.console_log.write_text("app2 login: ")   # the ready line never reached the serial log
    monkeypatch.setattr(vm, "is_running", lambda proc=None: True)
    vm.agent = _Agent(journal)  # type: ignore[assignment]
    return vm


def test_a_ready_line_the_console_lost_is_read_from_the_journal(tmp_path, monkeypatch):
    vm = _booted(tmp_path, monkeypatch, "APPLIANCE READY node=app2 role=realserver address=172.20.40.22 "
                                        "instance=redundant-app2-d54665215b88\n")
    assert vm.wait_until_ready(5).group(1, 2, 3) == ("app2", "realserver", "172.20.40.22")
    assert "appliance-ready.service" in vm.agent.commands[0]


def test_a_failed_line_in_the_journal_fails_the_boot_at_once(tmp_path, monkeypatch):
    from lab.machine import BootFailed
    vm = _booted(tmp_path, monkeypatch, "APPLIANCE FAILED node=app2 role=realserver inactive=apache2.service\n")
    with pytest.raises(BootFailed, match="inactive=apache2.service"):
        vm.wait_until_ready(30)


def test_a_kernel_panic_at_boot_power_cycles_once_and_a_second_one_fails_at_once(tmp_path, monkeypatch):
    from lab.machine import BootFailed
    vm = _booted(tmp_path, monkeypatch, "")
    cycles = []

    def power_cycle():
        cycles.append(1)
        # the second boot prints the ready line, after the first boot's panic in the same log
        vm.console_log.write_text(vm.console_log.read_text() + "\nAPPLIANCE READY node=app2 role=realserver "
                                  "address=172.20.40.22 instance=i\n")
    panic = "[    8.65] Kernel panic - not syncing: Fatal exception in interrupt\n"
    vm.console_log.write_text(panic)
    monkeypatch.setattr(vm, "crash", lambda: None)

    def restarted():  # start() reads the console from the end of the last boot's on
        power_cycle()
        vm._console_from = len(panic)
    monkeypatch.setattr(vm, "start", restarted)
    assert vm.wait_until_ready(5).group(1) == "app2" and len(cycles) == 1
    # a boot that panics again is broken, said at once
    vm2 = _booted(tmp_path / "b", monkeypatch, "")
    vm2.console_log.write_text("Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    monkeypatch.setattr(vm2, "crash", lambda: None)
    monkeypatch.setattr(vm2, "start", lambda: None)
    with pytest.raises(BootFailed, match="died at boot twice"):
        vm2.wait_until_ready(5)


# app1's console on 2026-12-03 (keepalived suite): one vCPU's timers stopped 37 s into the boot
_STALL = """[   37.332110] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   37.333399] rcu: \t0-...!: (0 ticks this GP) idle=7ff8/0/0x0 softirq=441/441 fqs=0 (false positive?)
[   37.334227] rcu: \t(detected by 1, t=5255 jiffies, g=-1127, q=6962 ncpus=2)
[   37.432406] rcu: rcu_preempt kthread timer wakeup didn't happen for 5254 jiffies! g-1127 f0x0 RCU_GP_WAIT_FQS(5)
[   37.433372] rcu: \tPossible timer handling issue on cpu=0 timer-softirq=57
[   37.433798] rcu: rcu_preempt kthread starved for 5255 jiffies! g-1127 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402 ->cpu=0
[   37.438671] rcu: \tUnless rcu_preempt kthread gets sufficient CPU time, OOM is now expected behavior.
[   37.440195] rcu: RCU grace-period kthread stack dump:
"""
_BOOTING = "[   29.412969] systemd[1]: Detected virtualization qemu.\n"


def test_a_vcpu_whose_timers_stopped_is_a_wedge_but_a_slow_or_recovered_boot_is_not():
    from lab.machine import WEDGE_REPORTS, boot_wedge
    wedged = _BOOTING + _STALL * WEDGE_REPORTS
    assert "RCU stall reports and nothing else" in boot_wedge(wedged)
    # a stack dump beneath each report is still the detector's
    dump = "[   37.5] Call Trace:\n[   37.5]  <TASK>\n[   37.5]  ? __schedule+0x2d1/0x8a0\n[   37.5]  </TASK>\n"
    assert boot_wedge(_BOOTING + (_STALL + dump) * WEDGE_REPORTS)
    assert boot_wedge(_BOOTING + _STALL * (WEDGE_REPORTS - 1)) is None   # not yet
    # a starved guest that still gets on with its boot between the reports
    progress = "[   60.1] EXT4-fs (vda3): mounted filesystem with ordered data mode.\n"
    assert boot_wedge(_BOOTING + (_STALL + progress) * WEDGE_REPORTS) is None
    # an early stall it recovered from does not count against a later, real wedge
    assert boot_wedge(_STALL + progress + _STALL * WEDGE_REPORTS)


def test_a_wedged_boot_is_power_cycled_once_and_a_ready_line_is_never_a_wedge(tmp_path, monkeypatch):
    from lab.machine import WEDGE_REPORTS, BootFailed
    vm = _booted(tmp_path, monkeypatch, "")
    wedged = _BOOTING + _STALL * WEDGE_REPORTS
    vm.console_log.write_text(wedged)
    monkeypatch.setattr(vm, "crash", lambda: None)
    ready = "APPLIANCE READY node=app2 role=realserver address=172.20.40.22 instance=i\n"

    def restarted():
        vm.console_log.write_text(wedged + ready)
        vm._console_from = len(wedged)
    monkeypatch.setattr(vm, "start", restarted)
    assert vm.wait_until_ready(5).group(1) == "app2"
    # stalls after the ready line: a booted machine, not a wedge
    vm2 = _booted(tmp_path / "b", monkeypatch, "")
    vm2.console_log.write_text(ready + _STALL * WEDGE_REPORTS)
    monkeypatch.setattr(vm2, "crash", lambda: pytest.fail("power-cycled a booted machine"))
    assert vm2.wait_until_ready(5)
    # a second wedge after the power cycle fails the boot, naming both
    vm3 = _booted(tmp_path / "c", monkeypatch, "")
    vm3.console_log.write_text(wedged)
    monkeypatch.setattr(vm3, "crash", lambda: None)
    monkeypatch.setattr(vm3, "start", lambda: None)
    with pytest.raises(BootFailed, match="died at boot twice .*RCU stall reports"):
        vm3.wait_until_ready(5)
