"""Each image boots under QEMU: with its seed it becomes the node the seed names; without one
it says so on the console and starts no cluster service."""
from __future__ import annotations

import time

import pytest

from builder import contract
from lab.machine import Machine
from lab.paths import RESULTS, image

pytestmark = pytest.mark.vm
BOOT_TIMEOUT = 300  # TCG on a busy 2-core machine; KVM needs a fraction


@pytest.fixture(scope="module")
def booted(accel, seeds):
    """Both images with their seeds and both without: all four boot at once, so their waits
    overlap. Keyed by (seeded, node)."""
    vms = {(seeded, name): Machine(name, image(role), RESULTS / ("boot-seeded" if seeded else "boot-unseeded"),
                                   accel=accel, seed=seeds / f"{name}.iso" if seeded else None)
           for seeded in (True, False) for name, role in (("loadb1", "director"), ("webserver1", "webserver"))}
    try:
        for vm in vms.values():
            vm.start()
        yield vms
    finally:
        for vm in vms.values():
            vm.shutdown()


@pytest.fixture(scope="module")
def seeded(booted):
    vms = {name: vm for (seeded, name), vm in booted.items() if seeded}
    for vm in vms.values():
        vm.ready = vm.wait_until_ready(BOOT_TIMEOUT)
        print(f"\n{vm.name}: ready {time.monotonic() - vm.started_at:.1f}s after QEMU start")
        vm.wait_for_agent(60)
    return vms


@pytest.fixture(scope="module")
def unseeded(booted):
    return {name: vm for (seeded, name), vm in booted.items() if not seeded}


def test_director_becomes_loadb1_with_heartbeat_and_ipvs(seeded):
    loadb1 = seeded["loadb1"]
    assert loadb1.ready.group(1, 2, 3) == ("loadb1", "director", "192.168.0.103")
    assert loadb1.succeed("uname -n").strip() == "loadb1"
    assert "inet 192.168.0.103/24" in loadb1.succeed("ip -4 addr show eth0")
    loadb1.wait_for_unit("heartbeat")
    modules = loadb1.succeed("lsmod").split()
    for m in ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc", "ip_vs_lblcr",
              "ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq", "ip_vs_ftp"):
        assert m in modules, m
    assert loadb1.succeed("sysctl -n net.ipv4.ip_forward").strip() == "1"
    assert loadb1.succeed("sysctl -n net.ipv4.vs.expire_nodest_conn").strip() == "1"
    assert loadb1.succeed("stat -c %a /etc/ha.d/authkeys").strip() == "600"
    assert loadb1.fail("systemctl is-enabled ldirectord").strip() == "disabled"


def test_webserver_serves_the_check_page_on_its_own_address(seeded):
    web = seeded["webserver1"]
    assert web.ready.group(1, 2, 3) == ("webserver1", "realserver", "192.168.0.101")
    assert web.succeed("uname -n").strip() == "webserver1"
    assert "Test Page" in web.succeed("curl -sf http://192.168.0.101/ldirector.html")
    assert "inet 192.168.0.105/32" in web.succeed("ip -4 addr show lo")
    assert web.succeed("sysctl -n net.ipv4.conf.eth0.arp_ignore").strip() == "1"
    assert web.succeed("sysctl -n net.ipv4.conf.all.arp_announce").strip() == "2"


@pytest.mark.parametrize("name, services", [("loadb1", "heartbeat apache2"), ("webserver1", "apache2")])
def test_without_a_seed_the_node_says_so_and_serves_nothing(unseeded, name, services):
    vm = unseeded[name]
    vm.wait_for_console(rf"{contract.NOT_CONFIGURED}: no seed ISO", BOOT_TIMEOUT)
    vm.wait_for_agent(BOOT_TIMEOUT)
    vm.wait_until_succeeds("systemctl is-system-running --wait >/dev/null; true", 120)
    for service in services.split():
        assert vm.fail(f"systemctl is-active {service}").strip() == "inactive"
    assert contract.READY not in vm.console()
