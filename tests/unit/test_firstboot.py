"""First boot's seed reader, run on the host against seeds the builder writes."""
import json
from pathlib import Path

import pytest

from builder import profile, render, seed
from firstboot import configure

ROOT = Path(__file__).resolve().parents[2]
KEY = "3f9a1c5e7b2d4086" * 4


@pytest.fixture
def howto():
    return profile.load(ROOT / "profiles" / "howto.toml")


def unpack(cluster, name, tmp_path, key=KEY):
    """What first boot sees on the mounted ISO."""
    [iso] = seed.write_seeds(cluster, seed.Keys(key), tmp_path / "iso", [name])
    _, files = seed.read_iso(iso)
    d = tmp_path / name
    d.mkdir()
    for fname, data in files.items():
        (d / fname).write_bytes(data)
    return d


def test_seed_gives_the_same_files_as_builder_render(howto, tmp_path):
    s = configure.read_seed(unpack(howto, "loadb2", tmp_path), "director")
    assert s.node.name == "loadb2" and s.instance_id.startswith("howto-loadb2-")
    assert configure.files_for(s) == render.node_files(howto, howto.node("loadb2"), KEY)


def test_seed_for_the_other_role_is_refused(howto, tmp_path):
    with pytest.raises(configure.SeedError, match="this is a director image but the seed is for realserver webserver1"):
        configure.read_seed(unpack(howto, "webserver1", tmp_path), "director")


def test_seed_with_a_broken_cluster_lists_the_problems(howto, tmp_path):
    d = unpack(howto, "loadb1", tmp_path)
    data = json.loads((d / "appliance.json").read_text())
    data["cluster"]["vip"] = "192.168.0.300"
    (d / "appliance.json").write_text(json.dumps(data))
    with pytest.raises(configure.SeedError, match="vip: address 192.168.0.300 is not an IPv4 address"):
        configure.read_seed(d, "director")


def test_seed_without_appliance_json_says_how_to_make_one(howto, tmp_path):
    d = unpack(howto, "loadb1", tmp_path)
    (d / "appliance.json").unlink()
    with pytest.raises(configure.SeedError, match="python -m builder seed"):
        configure.read_seed(d, "director")


def test_director_seed_with_a_weak_secret_is_refused(howto, tmp_path):
    d = unpack(howto, "loadb1", tmp_path)
    data = json.loads((d / "appliance.json").read_text())
    data["secret"] = "password"
    (d / "appliance.json").write_text(json.dumps(data))
    with pytest.raises(configure.SeedError, match="heartbeat secret on the seed is unusable"):
        configure.read_seed(d, "director")


def test_meta_data_values_are_read_quoted_or_not():
    assert configure._meta_data('instance-id: "a-1"\nlocal-hostname: web\n') == {
        "instance-id": "a-1", "local-hostname": "web"}


def test_the_stack_units_follow_the_profile(howto, tmp_path):
    fast = profile.load(ROOT / "profiles" / "fast-failover.toml")
    kept = profile.load(ROOT / "profiles" / "keepalived.toml")
    root = tmp_path / "root"
    ldirectord = root / configure.WANTS / "ldirectord.service"
    keepalived = root / configure.WANTS / "keepalived.service"
    both = configure.read_seed(unpack(fast, "loadb1", tmp_path), "director")
    assert configure.set_units(both, root) == {"ldirectord.service"}
    assert str(ldirectord.readlink()) == configure.OWN_UNITS["ldirectord.service"]
    assert configure.set_units(both, root) == {"ldirectord.service"}  # a second run keeps one link
    # re-seeded with the howto's profile: heartbeat starts ldirectord, the link goes
    active = configure.read_seed(unpack(howto, "loadb2", tmp_path), "director")
    assert not configure.set_units(active, root)
    assert not ldirectord.is_symlink()
    assert configure.services(active) == ("heartbeat.service", "apache2.service")
    web = configure.read_seed(unpack(howto, "webserver1", tmp_path), "realserver")
    assert not configure.set_units(web, root) and not ldirectord.is_symlink()
    # keepalived: its unit on, ldirectord's off, heartbeat's configuration gone
    (root / "etc/ha.d").mkdir(parents=True)
    (root / "etc/ha.d/ha.cf").write_text("node loadb1\n")
    kseed = configure.read_seed(unpack(kept, "lvs-a", tmp_path), "director")
    # keepalived: VRRP and its checkers, two daemons (contract.KEEPALIVED_CHECKERS_UNIT says why)
    checkers = root / configure.WANTS / "keepalived-checkers.service"
    assert configure.set_units(kseed, root) == {"keepalived.service", "keepalived-checkers.service"}
    assert keepalived.is_symlink() and checkers.is_symlink() and not ldirectord.is_symlink()
    configure.remove_other_stack(kseed, root)
    assert not (root / "etc/ha.d/ha.cf").exists()
    assert configure.services(kseed) == ("keepalived-checkers.service", "keepalived.service", "apache2.service")
    assert not configure.set_units(active, root) and not keepalived.is_symlink() and not checkers.is_symlink()
    # the ready line asks these: it must start after each of them has (a keepalived still
    # starting read as inactive and failed a boot, 2026-12-04)
    unit = (ROOT / "firstboot" / "appliance-ready.service").read_text()
    after = next(line for line in unit.splitlines() if line.startswith("After=")).split("=", 1)[1].split()
    assert set(configure.services(active) + configure.services(kseed)) <= set(after), after


def test_node_json_gives_each_director_its_peer_and_the_watchdogs_limits(howto, tmp_path):
    kept = profile.load(ROOT / "profiles" / "keepalived.toml")
    for cluster in (howto, kept):
        a, b = cluster.directors
        facts = configure.node_facts(configure.read_seed(unpack(cluster, a.name, tmp_path / a.name), "director"))
        assert facts["peer_address"] == str(b.address) and facts["address"] == str(a.address)
        assert facts["duplicate_limit"] == cluster.failover.duplicate_limit > cluster.failover.deadtime_s
        assert facts["vacancy_limit"] == cluster.failover.takeover_limit  # a takeover's own time first
        assert facts["stack"] == cluster.stack and facts["vips"] == [str(cluster.vip)]
        # the deaf-stack check's: a fresh stack's first verdict, and who shows the LAN works
        assert facts["initdead"] == cluster.failover.initdead_s >= cluster.failover.deadtime_s
        assert facts["witnesses"] == [str(n.address) for n in cluster.real_servers] != []
        if cluster.link:  # the deaf-stack check asks there whether the peer is alive
            assert facts["peer_link_address"] == str(b.link_address)
            assert facts["link_interface"] == cluster.link.interface
        else:  # the LAN alone
            assert "peer_link_address" not in facts
    assert kept.link and not howto.link
    web = configure.node_facts(configure.read_seed(unpack(howto, "webserver1", tmp_path / "w"), "realserver"))
    assert "peer_address" not in web and "vips" not in web


def test_a_pinned_mac_finds_its_nic_whatever_the_kernel_called_it(tmp_path):
    for name, mac in (("eth0", "52:54:00:00:00:01"), ("eth1", "52:54:00:aa:bb:cc")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(mac + "\n")
    assert configure.nic_with_mac("52:54:00:aa:bb:cc", tmp_path) == "eth1"
    assert configure.nic_with_mac("52:54:00:ff:ff:ff", tmp_path) is None


def test_ready_names_the_services_systemctl_does_not_call_active(tmp_path, monkeypatch, capsys):
    """One `systemctl is-active a b c` call answers per unit, in order; a short answer (systemctl
    died) counts the rest as not active."""
    from firstboot import ready
    node = {"node": "lb1", "role": "director", "address": "10.0.0.3", "instance": "i-1",
            "services": ["heartbeat.service", "apache2.service", "ipvs-sync-backup.service"]}
    (tmp_path / "node.json").write_text(json.dumps(node))
    asked = []

    def systemctl(states):
        def run(argv, check=True):
            asked.append(argv)
            return type("Done", (), {"stdout": states})()
        return run

    monkeypatch.setattr(ready, "run", systemctl("active\nactive\nactive\n"))
    assert ready.ready(tmp_path) == 0
    assert capsys.readouterr().out == ("APPLIANCE READY node=lb1 role=director address=10.0.0.3 "
                                       "instance=i-1\n")
    assert asked == [["systemctl", "is-active", *node["services"]]]
    monkeypatch.setattr(ready, "run", systemctl("active\nfailed\n"))
    assert ready.ready(tmp_path) == 1
    assert capsys.readouterr().out == ("APPLIANCE FAILED node=lb1 role=director "
                                       "inactive=apache2.service,ipvs-sync-backup.service\n")


def test_a_later_boot_imports_no_jinja2():
    """Importing first boot (all a configured node's later boots need) leaves the renderers
    out: under TCG that import is ~0.5 s of CPU on every boot's critical path."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, firstboot.configure; "
                          "print(sorted(m for m in sys.modules if m.startswith(('jinja2', 'builder.render'))))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class FakeClock:
    """time.monotonic and time.sleep for first boot's waits; udevadm settle takes its timeout."""
    def __init__(self):
        self.now, self.settles = 0.0, []

    def run(self, argv, check=True):
        assert argv[:2] == ["udevadm", "settle"], argv
        timeout = int(argv[2].removeprefix("--timeout="))
        self.settles.append(timeout)
        self.now += timeout

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(configure, "run", c.run)
    monkeypatch.setattr(configure.time, "monotonic", lambda: c.now)
    monkeypatch.setattr(configure.time, "sleep", c.sleep)
    return c


def test_a_nic_whose_driver_binds_late_is_waited_for_past_one_settle(clock):
    # the NIC appears 70 s in: after two 30-s settles, within NIC_WAIT
    assert configure.wait_for_nic(lambda: clock.now >= 70, wait=120)
    assert len(clock.settles) == 3 and clock.now < 120


def test_a_nic_that_never_comes_is_given_up_on_after_the_wait(clock):
    assert not configure.wait_for_nic(lambda: False, wait=120)
    assert 120 <= clock.now <= 121 and all(1 <= t <= 30 for t in clock.settles)


def test_a_nic_already_there_is_not_waited_for(clock):
    assert configure.wait_for_nic(lambda: True)
    assert clock.settles == [] and clock.now == 0
