"""Each image boots under QEMU: with its seed it becomes the node the seed names; without one
it says so on the console and starts no cluster service."""
from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from builder import contract, profile, render, tls
from lab.machine import Machine
from lab.paths import ROOT, image, results
from tests.variants import VARIANTS

pytestmark = pytest.mark.vm
BOOT_TIMEOUT = contract.BOOT_TIMEOUT  # four at once; bookworm's seeded pair needed ~300 s (2026-12-03)


@pytest.fixture(scope="module")
def booted(accel, seeds, request):
    """Both images with their seeds and both without, as far as the selected tests need them:
    all boot at once, so their waits overlap. Keyed by (seeded, node)."""
    kinds = {"seeded" in item.fixturenames for item in request.session.items
             if {"seeded", "unseeded"} & set(item.fixturenames)}
    vms = {(seeded, name): Machine(name, image(role), results("boot-seeded" if seeded else "boot-unseeded"),
                                   accel=accel, seed=seeds / f"{name}.iso" if seeded else None)
           for seeded in kinds for name, role in (("loadb1", "director"), ("webserver1", "webserver"))}
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


# The seeded pair's checks are also every cluster suite's step 1, on every node of its profile:
# make test runs the pair on bookworm's images only (`make boot` deselects it: -m "not seeded").
@pytest.mark.seeded
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
    assert_version(loadb1, "director")


@pytest.mark.seeded
def test_webserver_serves_the_check_page_on_its_own_address(seeded):
    web = seeded["webserver1"]
    assert web.ready.group(1, 2, 3) == ("webserver1", "realserver", "192.168.0.101")
    assert web.succeed("uname -n").strip() == "webserver1"
    assert "Test Page" in web.succeed("curl -sf http://192.168.0.101/ldirector.html")
    assert "inet 192.168.0.105/32" in web.succeed("ip -4 addr show lo")
    assert web.succeed("sysctl -n net.ipv4.conf.eth0.arp_ignore").strip() == "1"
    assert web.succeed("sysctl -n net.ipv4.conf.all.arp_announce").strip() == "2"
    assert_version(web, "webserver")


def assert_version(vm: Machine, role: str) -> None:
    """The image reports the version its build recorded beside it (update bundles carry it)."""
    recorded = image(role).with_suffix(".version").read_text().strip()
    assert recorded and recorded != "unknown"
    assert f'IMAGE_VERSION="{recorded}"' in vm.succeed("cat /usr/lib/os-release").splitlines()


@pytest.mark.parametrize("name, services", [("loadb1", "heartbeat apache2"), ("webserver1", "apache2")])
def test_without_a_seed_the_node_says_so_and_serves_nothing(unseeded, name, services):
    vm = unseeded[name]
    vm.wait_for_console(rf"{contract.NOT_CONFIGURED}: no seed ISO", BOOT_TIMEOUT)
    vm.wait_for_agent(BOOT_TIMEOUT)
    vm.wait_until_succeeds("systemctl is-system-running --wait >/dev/null; true", 120)
    for service in services.split():
        assert vm.fail(f"systemctl is-active {service}").strip() == "inactive"
    assert contract.READY not in vm.console()


# vip-takeover's own echo, run in the image (its ping, its kernel): heartbeat's verdict that the
# peer and every ping node are dead is asked again with it before a director steps out
ECHO_PROBE = """import importlib.machinery, importlib.util, sys
loader = importlib.machinery.SourceFileLoader("vt", "/usr/libexec/appliance/vip-takeover")
vt = importlib.util.module_from_spec(importlib.util.spec_from_loader("vt", loader))
sys.modules["vt"] = vt
loader.exec_module(vt)
print(vt.echo(sys.argv[1], float(sys.argv[2])))
"""


def test_a_stalled_director_does_not_take_its_own_silence_for_a_cut(unseeded):
    """CI, stop 42: a standby, stalled by its loaded host, found heartbeat's ping node and then
    its own 2-s echo unanswered, stepped out and left its paused peer's VIP vacant for 70 s.
    A window of silence counts only if the guest lived through it: a stall of the whole guest
    (its clock runs on, its ping sends nothing) is STALLED; the same silence lived through is
    SILENT. The ping node here is a neighbour nobody answers for, with no error to say so."""
    vm = unseeded["loadb1"]
    vm.wait_for_agent(BOOT_TIMEOUT)
    vm.put_files({"echo.py": (ECHO_PROBE, 0o644)}, "/tmp/echo")
    vm.succeed("ip link add echo0 type veth peer name echo1 && ip link set echo0 up && ip link set echo1 up"
               " && ip addr add 10.9.9.1/24 dev echo0"
               " && ip neigh replace 10.9.9.7 lladdr 02:00:00:00:00:07 dev echo0 nud permanent")
    try:
        assert vm.succeed("python3 /tmp/echo/echo.py 10.9.9.1 2").strip() == "answered"
        assert vm.succeed("python3 /tmp/echo/echo.py 10.9.9.7 6").strip() == "silent"
        vm.succeed("systemd-run --unit=echo-probe -p StandardOutput=file:/run/echo.out"
                   " python3 /tmp/echo/echo.py 10.9.9.7 6")
        vm.wait_until_succeeds("pgrep -x ping", 30)
        vm.stall(3.5)  # more than 40 % of the 6-s window
        said = vm.wait_until_succeeds("test -s /run/echo.out && cat /run/echo.out", 30).strip()
        assert said == "stalled", said
    finally:
        vm.succeed("ip link del echo0")


def _rendered(cluster, node, secret: str) -> dict[str, tuple[str, int]]:
    return {path: (f.content, f.mode) for path, f in render.node_files(cluster, node, secret).items()}


# Every shipped profile's files, checked by the daemons that will read them, in the image (their
# versions are the image's, not the host's): a file only our golden copies accept proves nothing.
# On the unseeded director (no service of its own runs there), after the test above.
PROFILES = sorted((ROOT / "profiles").glob("*.toml"))
HEARTBEAT = "/usr/libexec/heartbeat/heartbeat"  # Debian's; heartbeat.service runs it with -f
CASES: dict[str, Path | dict] = {**{p.stem: p for p in PROFILES}, **VARIANTS}  # tests/variants.py


def _cluster(case: str) -> profile.Cluster:
    source = CASES[case]
    return profile.load(source) if isinstance(source, Path) else profile.parse(source, case)


@pytest.mark.parametrize("case", CASES)
def test_every_profiles_files_pass_their_own_tools_in_the_image(unseeded, case):
    vm = unseeded["loadb1"]
    vm.wait_for_agent(BOOT_TIMEOUT)
    cluster = _cluster(case)
    secret = secrets.token_hex(16)
    checked = []
    for node in (cluster.directors[0], cluster.real_servers[0]):
        root = f"/tmp/configs/{cluster.name}/{node.name}"
        vm.put_files(_rendered(cluster, node, secret), root)
        # the node's NICs with its addresses, as dummies in a namespace of their own: the daemons
        # see the machine they were configured for, and nothing they send leaves it
        nics = [(cluster.network.interface, node.address, cluster.network.prefixlen)]
        if cluster.link and node.link_address:
            nics.append((cluster.link.interface, node.link_address, cluster.link.subnet.prefixlen))
        vm.succeed("ip netns del cfg 2>/dev/null; ip netns add cfg && ip -n cfg link set lo up && "
                   + " && ".join(f"ip -n cfg link add {n} type dummy && ip -n cfg addr add {a}/{p} dev {n} "
                                 f"&& ip -n cfg link set {n} up" for n, a, p in nics))
        run = "ip netns exec cfg "
        # ifupdown reads the interfaces file without touching a NIC
        vm.succeed(f"{run}ifup --no-act --interfaces={root}/etc/network/interfaces --all")
        # every sysctl key exists in this kernel and takes its value (IPVS's need the module)
        sysctl = render.SYSCTL_DIRECTOR if node.is_director else render.SYSCTL_REALSERVER
        vm.succeed(f"modprobe ip_vs && {run}sysctl -q -p {root}{sysctl}")
        checked += ["interfaces", "sysctl"]
        if render.NFTABLES_CONF in _rendered(cluster, node, secret):  # the port groups' marks
            vm.succeed(f"nft -c -f {root}{render.NFTABLES_CONF}")
            checked.append("nft -c")
        if not node.is_director and cluster.serves_tls:  # Apache loads mod_ssl, the certificate and its key
            site = render.tls_files(cluster, node, tls.generate(cluster))
            vm.put_files({p: (f.content, f.mode) for p, f in site.items()}, "/")
            code, out = vm.execute("apache2ctl configtest 2>&1; rc=$?; rm -f " + " ".join(site) + "; exit $rc")
            assert code == 0, out
            checked.append("apache2ctl configtest with TLS on 443")
        if not node.is_director:
            continue
        if cluster.keepalived:
            # /run/keepalived is the unit's RuntimeDirectory: without it keepalived drops the
            # hand-over's track file, saying only "realpath() error ... for hand_over"
            out = vm.succeed(f"mkdir -p /run/keepalived && {run}keepalived --config-test "
                             f"-f {root}{render.KEEPALIVED_CONF} 2>&1")
            assert "hand_over" not in out, out
            vm.succeed(f"{run}keepalived --config-test -f {root}{contract.KEEPALIVED_CHECKERS_CONF} 2>&1")
            checked.append("keepalived --config-test (VRRP and checkers)")
            continue
        # ldirectord parses its file before it looks for a running daemon: exit 3 = parsed, stopped
        code, out = vm.execute(f"{run}ldirectord {root}/etc/ha.d/ldirectord.cf status 2>&1")
        assert code == 3 and "is stopped" in out, out
        if cluster.vips6:  # what ldirectord `require`s at its first check of an IPv6 real server
            vm.succeed("perl -e 'require Net::INET6Glue::INET_is_INET6'")
            checked.append("ldirectord's IPv6 checks")
        # heartbeat has no parse-only mode: it reads ha.cf, haresources and authkeys (as the node
        # it is named after) before it forks; a bad file stops it there with "Configuration error"
        vm.succeed(f"hostname {node.name} && cp -p {root}/etc/ha.d/ha.cf {root}/etc/ha.d/haresources "
                   f"{root}/etc/ha.d/authkeys /etc/ha.d/")
        code, out = vm.execute(f"{run}{HEARTBEAT} >/tmp/hb.out 2>&1; rc=$?; {run}{HEARTBEAT} -k >/dev/null 2>&1; "
                               "pkill -9 -x heartbeat; rm -f /etc/ha.d/ha.cf /etc/ha.d/haresources "
                               "/etc/ha.d/authkeys; cat /tmp/hb.out; exit $rc", timeout=120)
        assert code == 0 and "Configuration error" not in out, out
        checked += ["ldirectord", "heartbeat"]
    vm.succeed("ip netns del cfg; apache2ctl configtest 2>&1")
    print(f"\n{case}: {', '.join(checked)}, apache2ctl configtest: ok")
