"""Several virtual services on one pair: each with its own VIP or the cluster's, a port group
balanced as one firewall mark, persistence. Checked where the daemons read it: the rendered
ldirectord.cf, keepalived.conf, haresources, nftables and the real servers' lo addresses."""
import re
import time
from ipaddress import IPv4Address

import pytest

from builder import contract, profile, render
from firstboot import configure
from tests.variants import GROUP6, SITE, SITE6, dual_stack, with_services
from tests.variants import PROFILES as PROFILES_DIR


@pytest.fixture(params=["redundant", "keepalived"])
def two_sites(request):
    return profile.parse(with_services(request.param, SITE))


def files(cluster, name):
    return {p: f.content for p, f in render.node_files(cluster, cluster.node(name), "x" * 32).items()}


def test_a_port_group_gets_a_mark_and_the_pair_carries_both_vips(two_sites):
    site = two_sites.services[1]
    assert site.fwmark == 1 and site.group == (80, 443) and site.check_port == 80
    assert two_sites.services[0].fwmark is None
    assert two_sites.vips == (IPv4Address("172.20.40.100"), IPv4Address("172.20.40.101"))
    assert profile.parse(profile.to_dict(two_sites)) == two_sites


def test_directors_mark_the_group_and_balance_the_mark(two_sites):
    d = files(two_sites, "lvs-a")
    nft = d[contract.NFTABLES_CONF]
    assert "ip daddr 172.20.40.101 tcp dport { 80, 443 } meta mark set 1" in nft
    assert "hook prerouting priority mangle" in nft and "delete table inet appliance_fwmark" in nft
    assert contract.NFTABLES_UNIT in configure.units_for(two_sites, two_sites.node("lvs-a"))
    assert contract.NFTABLES_UNIT not in configure.units_for(two_sites, two_sites.node("app1"))
    if two_sites.keepalived:
        conf, checkers = d[render.KEEPALIVED_CONF], d[contract.KEEPALIVED_CHECKERS_CONF]
        assert "virtual_server 172.20.40.100 80 {" in checkers
        group = checkers[checkers.index("virtual_server fwmark 1 {"):]
        assert "persistence_timeout 300" in group and "real_server 172.20.40.21 {" in group
        assert "connect_port 80" in group and "protocol" not in group.split("real_server")[0]
        vips = re.search(r"virtual_ipaddress \{\n(.*?)\n    \}", conf, re.S).group(1).split("\n")
        assert [line.split()[0] for line in vips] == ["172.20.40.100/24", "172.20.40.101/24"]
    else:
        cf = d[contract.LDIRECTORD_CF]
        group = cf[cf.index("virtual=1\n"):]
        for line in ("\treal=172.20.40.21 gate 3\n", "\tprotocol=fwm\n", "\tcheckport=80\n",
                     "\tpersistent=300\n", "\tfallback=127.0.0.1 gate\n"):
            assert line in group, line
        assert "virtual=172.20.40.100:80\n" in cf
        haresources = d["/etc/ha.d/haresources"]
        assert haresources.index("172.20.40.100/24/eth0") < haresources.index("172.20.40.101/24/eth0")


def test_real_servers_carry_every_vip_on_lo(two_sites):
    interfaces = files(two_sites, "app2")["/etc/network/interfaces"]
    assert "iface lo:0 inet static\naddress 172.20.40.100\n" in interfaces
    assert "iface lo:1 inet static\naddress 172.20.40.101\n" in interfaces


def test_the_watchdog_and_status_know_every_vip(two_sites):
    seed = configure.Seed(cluster=two_sites, node=two_sites.node("lvs-b"), secret="x" * 32, instance_id="i")
    assert configure.node_facts(seed)["vips"] == ["172.20.40.100", "172.20.40.101"]


SERVICE_PROBLEMS = {
    "a VIP outside the subnet": ({"vip": "10.9.9.9", "port": 8080, "fallback": ""},
                                 "services[1].vip: 10.9.9.9 is outside the subnet"),
    "a VIP that is a node's": ({"vip": "172.20.40.21", "port": 8080, "fallback": ""}, "is also the address of app1"),
    "a VIP that is the gateway": ({"vip": "172.20.40.1", "port": 8080, "fallback": ""}, "is also the gateway"),
    "port and ports": ({"vip": "172.20.40.101", "port": 80, "ports": [80, 443]}, "not both"),
    "a group of one": ({"vip": "172.20.40.101", "ports": [443]}, "two or more different ports"),
    "a port twice in a group": ({"vip": "172.20.40.101", "ports": [443, 443]}, "two or more different ports"),
    "a port not a port": ({"vip": "172.20.40.101", "ports": [80, 70000]}, "70000 is not a port"),
    "a port in two services of one VIP": ({"ports": [80, 443]}, "tcp port 80 on 172.20.40.100 is in two services"),
    "a fallback on another port": ({"vip": "172.20.40.101", "port": 8080}, "services[1].fallback: '127.0.0.1:80' is "
                                   "on another port than the service (8080)"),
    "persistence on source hashing": ({"vip": "172.20.40.101", "port": 80, "scheduler": "sh", "persistent": 60},
                                      "services[1].persistent: sh already sends"),
}


@pytest.mark.parametrize("service, message", SERVICE_PROBLEMS.values(), ids=SERVICE_PROBLEMS.keys())
def test_a_bad_service_is_named_with_its_fix(service, message):
    with pytest.raises(profile.ProfileError) as e:
        profile.parse(with_services("redundant", service))
    assert message in str(e.value)


def test_the_same_port_on_two_vips_is_two_services():
    c = profile.parse(with_services("redundant", {"vip": "172.20.40.101", "port": 80}))
    cf = files(c, "lvs-a")[contract.LDIRECTORD_CF]
    assert "virtual=172.20.40.100:80\n" in cf and "virtual=172.20.40.101:80\n" in cf


def test_sixteen_vips_lint_and_render():
    """The issue's scale: 16 VIPs, half of them port groups (timed by the caller's eye, not here)."""
    sites = [{"vip": f"172.20.40.{101 + i}", **({"ports": [80, 443]} if i % 2 else {"port": 80}),
              "request": "health.html", "receive": "app ok", "checkinterval": 2, "checktimeout": 5}
             for i in range(15)]
    started = time.monotonic()
    c = profile.parse(with_services("keepalived", *sites))
    rendered = {n.name: files(c, n.name) for n in c.nodes}
    took = time.monotonic() - started
    assert len(c.vips) == 16 and [s.fwmark for s in c.fwmark_services] == list(range(1, 8))
    assert rendered["lvs-a"][contract.KEEPALIVED_CHECKERS_CONF].count("virtual_server ") == 16
    assert rendered["app1"]["/etc/network/interfaces"].count("netmask 255.255.255.255") == 16
    print(f"16 VIPs: parsed and rendered for {len(c.nodes)} nodes in {took:.2f} s")


def test_apply_plans_a_service_by_its_vip_and_ports():
    from builder import plan
    base = profile.parse(with_services("redundant"))
    on_the_vip = profile.parse(with_services("redundant", {"port": 8080, "fallback": ""}))
    site = profile.parse(with_services("redundant", SITE))
    assert [(c.key, c.live) for c in plan.diff(base, on_the_vip)] == [("services.tcp/8080", True)]
    # a VIP the pair does not carry yet: heartbeat reads its resources only when it starts
    added = plan.diff(base, site)
    assert [(c.key, c.live) for c in added] == [("services.tcp/80+443@172.20.40.101", False)]
    assert "the VIP is held by the directors' stack" in str(added[0])
    stickier = profile.parse(with_services("redundant", {**SITE, "persistent": 600}))
    assert [(c.key, c.old, c.new, c.live) for c in plan.diff(site, stickier)] == [
        ("services.tcp/80+443@172.20.40.101.persistent", 300, 600, True)]


@pytest.fixture(params=["redundant", "keepalived"])
def dual(request):
    return profile.parse(dual_stack(request.param, SITE6, GROUP6))


def test_ipv6_vips_render_for_both_stacks_and_the_real_servers(dual):
    assert [str(v) for v in dual.vips6] == ["2001:db8:40::100", "2001:db8:40::101"]
    assert profile.parse(profile.to_dict(dual)) == dual
    d, real = files(dual, "lvs-a"), files(dual, "app1")
    assert "iface eth0 inet6 static\n\taddress 2001:db8:40::11/64\n\taccept_ra 0" in d["/etc/network/interfaces"]
    assert "\tgateway 2001:db8:40::1\n" in d["/etc/network/interfaces"]
    assert "up ip -6 addr add 2001:db8:40::100/128 dev lo\n" in real["/etc/network/interfaces"]
    assert "ip6 daddr 2001:db8:40::101 tcp dport { 80, 443 } meta mark set 1" in d[contract.NFTABLES_CONF]
    if dual.keepalived:
        conf, checkers = d[render.KEEPALIVED_CONF], d[contract.KEEPALIVED_CHECKERS_CONF]
        excluded = conf[conf.index("virtual_ipaddress_excluded {"):]
        assert "2001:db8:40::100/64 dev eth0" in excluded and "2001:db8:40::101/64 dev eth0" in excluded
        v6 = checkers[checkers.index("virtual_server 2001:db8:40::100 80 {"):]
        assert "real_server 2001:db8:40::21 80 {" in v6 and "sorry_server ::1 80" in v6
        group = checkers[checkers.index("virtual_server fwmark 1 {"):]
        assert "ip_family inet6" in group and "real_server 2001:db8:40::21 {" in group
    else:
        cf = d[contract.LDIRECTORD_CF]
        assert "virtual6=[2001:db8:40::100]:80\n\treal6=[2001:db8:40::21]:80 gate 3\n" in cf
        assert "\tfallback6=[::1]:80 gate\n" in cf
        assert "virtual6=1\n\treal6=[2001:db8:40::21] gate 3\n" in cf
        # heartbeat cuts resource arguments at "::": the long form has none
        assert "IPv6addr::2001:0db8:0040:0000:0000:0000:0000:0100/64/eth0" in d["/etc/ha.d/haresources"]


DUAL_PROBLEMS = {
    "an IPv6 VIP on an IPv4 LAN": (lambda: with_services("redundant", SITE6), "is IPv6 and the LAN has none"),
    "a node without address6": (lambda: {**(d := dual_stack("redundant")), "real_servers": [
        {k: v for k, v in n.items() if k != "address6"} for n in d["real_servers"]]},
        "app1: address6 is required on a dual-stack LAN"),
    "address6 outside prefix6": (lambda: {**(d := dual_stack("redundant")), "directors": [
        {**d["directors"][0], "address6": "2001:db8:99::11"}, d["directors"][1]]},
        "lvs-a: address6 2001:db8:99::11 is outside prefix6"),
    "an IPv6 VIP outside prefix6": (lambda: dual_stack("redundant", {**SITE6, "vip": "2001:db8:99::100"}),
                                    "is outside prefix6 2001:db8:40::/64"),
    "an IPv6 VIP that is a node's": (lambda: dual_stack("redundant", {**SITE6, "vip": "2001:db8:40::21"}),
                                     "is also the address of app1"),
    "gateway6 without prefix6": (lambda: {**(d := with_services("redundant")),
                                          "network": {**d["network"], "gateway6": "2001:db8:40::1"}},
                                 "network.gateway6: 2001:db8:40::1 needs prefix6"),
}


@pytest.mark.parametrize("data, message", DUAL_PROBLEMS.values(), ids=DUAL_PROBLEMS.keys())
def test_a_bad_dual_stack_profile_is_named_with_its_fix(data, message):
    with pytest.raises(profile.ProfileError) as e:
        profile.parse(data())
    assert message in str(e.value)


class Director:
    """A director as the lab sees it: its name and `ip -o addr show dev eth0`."""

    def __init__(self, name: str, *vips: str):
        self.name = name
        self.out = "".join(f"2: eth0    inet{'6' if ':' in v else ''} {v}/64 scope global eth0\n" for v in vips)

    def succeed(self, command: str) -> str:
        assert command == "ip -o addr show dev eth0"
        return self.out


def test_the_lab_counts_a_split_of_the_vips_as_two_holders(tmp_path, monkeypatch):
    from lab import chaos
    from lab.cluster import Cluster
    c = Cluster(PROFILES_DIR / "redundant.toml", tmp_path, "tcg")
    c.spec = profile.parse(dual_stack("redundant", SITE6, GROUP6, SITE))
    every = [str(v) for v in c.spec.vips]
    monkeypatch.setattr(c.stack, "answers", lambda d: True)
    for a, b, one in ((every, [], True), (every[:3], every[3:], False), (every[:3], [], False)):
        vms = [Director("lvs-a", *a), Director("lvs-b", *b)]
        monkeypatch.setattr(Cluster, "directors", property(lambda self, vms=vms: vms))
        holder = chaos.one_holder_answering(c)
        assert (holder is not None and holder.name == "lvs-a") is one, (a, b)
    assert c.vips_held(Director("x", "172.20.40.1000", "2001:db8:40::1001")) == set()  # no prefix match


def test_lint_says_how_many_services_and_every_vip(capsys):
    from builder import cli
    assert cli.main(["lint", "profiles/dual-stack.toml"]) == 0
    assert capsys.readouterr().out.strip().endswith(
        "ok (4 nodes, 3 services, VIPs 172.20.40.100, 2001:db8:40::100, 172.20.40.101)")
