"""What the lab's revive of a crashed director runs, per stack (lab/stack.py)."""
from __future__ import annotations

from builder import contract, profile
from lab import stack
from tests.conftest import ROOT


def test_a_revive_clears_each_stacks_own_state_and_then_proves_the_vip_gone():
    for name in ("howto", "keepalived"):
        spec = profile.load(ROOT / f"profiles/{name}.toml")
        s = stack.for_profile(spec)
        lines = s.revive_script(1700000000.5).splitlines()
        kill = lines.index(f"systemctl kill -s KILL {' '.join(s.kill_units)}")
        # the daemons die before what they held is cleared, or they would take it back
        assert kill < lines.index(contract.HA_RESET) < lines.index("ipvsadm -C")
        assert all(f in lines[lines.index(contract.HA_RESET) + 3] for f in s.runtime_files) and s.runtime_files
        assert lines[-1] == f"! ip -4 -o addr show dev {spec.network.interface} | grep -F ' {spec.vip}/'"
    assert contract.KEEPALIVED_STATE in stack.for_profile(profile.load(ROOT / "profiles/keepalived.toml")).runtime_files


def test_a_director_with_any_of_the_profiles_vips_holds_them():
    s = stack.for_profile(profile.load(ROOT / "profiles/dual-stack.toml"))
    only_v6 = ("    inet 172.20.40.11/24 brd 172.20.40.255 scope global eth0\n"
               "    inet6 2001:db8:40::100/64 scope global\n")
    assert s.vip_in(only_v6)
    assert s.vip_in("    inet 172.20.40.100/24 scope global secondary eth0\n")
    # 172.20.40.10 is not 172.20.40.100, nor 2001:db8:40::1 the IPv6 VIP
    assert not s.vip_in("    inet 172.20.40.10/24 scope global eth0\n    inet6 2001:db8:40::1/64 scope global\n")


def test_the_next_fault_waits_for_a_pair_past_its_first_verdict(tmp_path, monkeypatch):
    """A heartbeat the last event's step-out restarted takes nothing over before its first
    verdict: a fault then would be two faults at once (CI, stop 41: the standby took no VIP in
    72 s). The watchdog says when that verdict is given (hawatch.FirstVerdict)."""
    from lab.cluster import Cluster

    class Vm:
        def __init__(self, name):
            self.name = name

    c = Cluster(ROOT / "profiles/dual-stack.toml", tmp_path, "tcg")
    a, b = Vm("lvs-a"), Vm("lvs-b")
    monkeypatch.setattr(Cluster, "directors", property(lambda self: [a, b]))
    views = {"lvs-a": stack.View(True, False, True, "all"), "lvs-b": stack.View(True, False, False, "none")}
    health = {"lvs-a": {"up": 500, "verdict": True}, "lvs-b": {"up": 25, "verdict": True}}
    monkeypatch.setattr(c, "view", lambda d: views[d.name])
    monkeypatch.setattr(c, "health", lambda d: health[d.name])
    assert c.ready_for_fault()
    health["lvs-b"] = {"up": 25, "verdict": False}  # restarted moments ago, some node not heard yet
    assert not c.ready_for_fault()
    health["lvs-b"] = None  # the watchdog has not reported
    assert not c.ready_for_fault()
    health["lvs-b"] = {"up": 25, "verdict": True}
    views["lvs-b"] = stack.View(True, True, False, "transition")  # moving resources
    assert not c.ready_for_fault()
    views["lvs-b"] = stack.View(True, False, True, "all")  # two holders
    assert not c.ready_for_fault()
    views["lvs-b"] = stack.View(False, False, False, "HUNG", answering=False)
    assert not c.ready_for_fault()
