"""The profile is validated once, at the edge: good profiles load, bad ones say what to fix."""
import tomllib
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from builder import profile

HOWTO = Path(__file__).resolve().parents[2] / "profiles" / "howto.toml"


def howto_data():
    return tomllib.loads(HOWTO.read_text())


def test_howto_profile_loads_as_the_howto_describes():
    c = profile.load(HOWTO)
    assert [n.name for n in c.directors] == ["loadb1", "loadb2"]
    assert [(n.name, str(n.address)) for n in c.real_servers] == [
        ("webserver1", "192.168.0.101"), ("webserver2", "192.168.0.102")]
    assert c.vip == IPv4Address("192.168.0.105")
    assert str(c.network.broadcast_address) == "192.168.0.255"
    assert c.services[0].scheduler == "rr" and c.heartbeat.auth == "md5"
    assert profile.traps(c) == []


def test_round_trip_through_the_seed_mapping():
    c = profile.load(HOWTO)
    assert profile.parse(profile.to_dict(c)) == c


def mutate(change):
    data = howto_data()
    change(data)
    return data


BAD = {
    "newline in a string": (lambda d: d["services"][0].update(request="ldirector.html\nquiescent=no"),
                            "services[0].request: 'ldirector.html\\nquiescent=no' holds the control character '\\n'"),
    "control character in a name": (lambda d: d.update(domain="lab\ttest"), "domain: 'lab\\ttest' holds the control"),
    "quote in receive": (lambda d: d["services"][0].update(receive='Test" Page'),
                         "services[0].receive: 'Test\" Page' holds a quote"),
    "quote in check_content": (lambda d: d["services"][0].update(check_content="it's ok"),
                               "services[0].check_content: \"it's ok\" holds a quote"),
    "space in request": (lambda d: d["services"][0].update(request="check page.html"),
                         "services[0].request: 'check page.html' must be a file name"),
    "udp negotiate": (lambda d: d["services"][0].update(protocol="udp"),
                      "services[0].checktype: a negotiate check speaks http over TCP: "
                      'a UDP service needs checktype = "ping"'),
    "bad ipv4": (lambda d: d["directors"][0].update(address="192.168.0.300"),
                 "loadb1: address 192.168.0.300 is not an IPv4 address"),
    "vip outside subnet": (lambda d: d.update(vip="10.0.0.5"), "vip: 10.0.0.5 is outside the subnet"),
    "vip equals node": (lambda d: d.update(vip="192.168.0.101"), "also the address of webserver1"),
    "duplicate name": (lambda d: d["real_servers"][1].update(name="webserver1"), "duplicate node name webserver1"),
    "duplicate address": (lambda d: d["real_servers"][1].update(address="192.168.0.101"),
                          "duplicate node address 192.168.0.101"),
    "invalid hostname": (lambda d: d["real_servers"][0].update(name="web_1"), "not a valid host name"),
    "fqdn node name": (lambda d: d["directors"][0].update(name="loadb1.example.com"), "is a domain name"),
    "three directors": (lambda d: d["directors"].append({"name": "loadb3", "address": "192.168.0.106"}),
                        "exactly two directors, found 3"),
    "no real servers": (lambda d: d.update(real_servers=[]), "at least two real servers"),
    "unknown scheduler": (lambda d: d["services"][0].update(scheduler="fastest"),
                          "services[0].scheduler: 'fastest' is not an IPVS scheduler"),
    "port out of range": (lambda d: d["services"][0].update(port=70000), "services[0].port: 70000 is out of range"),
    "empty receive": (lambda d: d["services"][0].update(receive=""), "services[0].receive: must not be empty"),
    "mcast not multicast": (lambda d: d["heartbeat"].update(mcast_group="192.168.0.1"), "not a multicast group"),
    "checktimeout range": (lambda d: d["services"][0].update(checktimeout=0), "checktimeout: 0 is out of range"),
    "checkinterval range": (lambda d: d["services"][0].update(checkinterval=99999), "checkinterval: 99999 is out"),
    "fallback not local": (lambda d: d["services"][0].update(fallback="192.168.0.50:80"), "must be a local address"),
    "typo top level": (lambda d: d.update(vipp="1.2.3.4"), "unknown key 'vipp' (did you mean 'vip'?)"),
    "typo in section": (lambda d: d["heartbeat"].update(autofailback=True), "heartbeat.autofailback: unknown key"),
    "wrong type": (lambda d: d["services"][0].update(port="80"), "services[0].port: must be a int"),
    "unknown auth": (lambda d: d["heartbeat"].update(auth="rot13"), "heartbeat.auth: 'rot13' is not"),
    "deadtime vs keepalive": (lambda d: d["heartbeat"].update(keepalive=2, deadtime=4), "more than twice keepalive"),
    "gateway outside": (lambda d: d["network"].update(gateway="10.1.1.1"), "gateway: 10.1.1.1 is outside"),
    "node outside subnet": (lambda d: d["real_servers"][0].update(address="10.0.0.1"),
                            "webserver1: address 10.0.0.1 is outside"),
    "bad subnet": (lambda d: d["network"].update(subnet="192.168.0.0/33"), "network.subnet"),
    "missing vip": (lambda d: d.pop("vip"), "vip: is required"),
    "check timings differ": (lambda d: d["services"].append(dict(d["services"][0], port=8080, checktimeout=5)),
                             "checktimeout differs between services (10, 5)"),
    "weight range": (lambda d: d["real_servers"][0].update(weight=-1), "webserver1: -1 is out of range"),
    "below 100 ms": (lambda d: d["heartbeat"].update(keepalive=0.0005),
                      "heartbeat.keepalive: 0.0005 s is out of range (0.1..3600 s)"),
    "fractional ms": (lambda d: d["heartbeat"].update(keepalive=0.2505),
                      "0.2505 s is finer than heartbeat's milliseconds"),
    "fast takeover needs ldirectord on both": (lambda d: d["heartbeat"].update(takeover="fast"),
                                               'heartbeat.takeover: "fast" needs ldirectord = "both"'),
    "unknown takeover": (lambda d: d["heartbeat"].update(takeover="quick"),
                         "heartbeat.takeover: 'quick' is not a way to take over the VIP (one of heartbeat, fast)"),
    "link overlaps the LAN": (lambda d: d.update(link={"subnet": "192.168.0.0/30"}) or [
        n.update(link_address=a) for n, a in zip(d["directors"], ("192.168.0.1", "192.168.0.2"), strict=True)],
        "link.subnet: 192.168.0.0/30 overlaps the LAN subnet 192.168.0.0/24"),
    "same link address twice": (lambda d: d.update(link={"subnet": "10.255.0.0/30"}) or [
        n.update(link_address="10.255.0.1") for n in d["directors"]], "each needs its own"),
    "link address outside the link": (lambda d: d.update(link={"subnet": "10.255.0.0/30"}) or [
        n.update(link_address=a) for n, a in zip(d["directors"], ("10.255.0.1", "10.9.0.2"), strict=True)],
        "loadb2: link_address 10.9.0.2 is outside the link subnet 10.255.0.0/30"),
    "link address without a link": (lambda d: d["directors"][0].update(link_address="10.255.0.1"),
                                    "loadb1: link_address needs a [link] section"),
    "link on a real server": (lambda d: d["real_servers"][0].update(link_address="10.255.0.3"),
                              "webserver1: link_address: only directors have it"),
    "link on the LAN's NIC": (lambda d: d.update(link={"subnet": "10.255.0.0/30", "interface": "eth0"}) or [
        n.update(link_address=a) for n, a in zip(d["directors"], ("10.255.0.1", "10.255.0.2"), strict=True)],
        "link.interface: eth0 is the LAN's interface"),
    "ping node is a director": (lambda d: d["heartbeat"].update(ping_nodes=["192.168.0.103"]),
                                "heartbeat.ping_nodes: 192.168.0.103 is loadb1"),
    "ping node is the VIP": (lambda d: d["heartbeat"].update(ping_nodes=["192.168.0.105"]),
                             "heartbeat.ping_nodes: 192.168.0.105 is the VIP"),
    "ping node unreachable": (lambda d: d["heartbeat"].update(ping_nodes=["10.1.2.3"]),
                              "outside the subnet 192.168.0.0/24 and there is no gateway"),
    "malformed mac": (lambda d: d["network"].update(interface="lan0")
                      or d["directors"][0].update(mac="52:54:00:zz:00:01"),
                      "loadb1: mac '52:54:00:zz:00:01' is not a MAC address"),
    "multicast mac": (lambda d: d["network"].update(interface="lan0")
                      or d["directors"][0].update(mac="01:00:5e:00:00:01"),
                      "is a multicast address"),
    "duplicate mac": (lambda d: d["network"].update(interface="lan0") or [
        n.update(mac="52:54:00:00:00:01") for n in d["directors"]], "duplicate node mac 52:54:00:00:00:01"),
    "mac pinned to a kernel name": (lambda d: d["directors"][0].update(mac="52:54:00:00:00:01"),
                                    "network.interface: eth0 is a name the kernel gives"),
    "weight on a director": (lambda d: d["directors"][0].update(weight=2),
                             "loadb1: weight: only real servers have it"),
    "ldirectord mode": (lambda d: d["heartbeat"].update(ldirectord="standby"),
                        "heartbeat.ldirectord: 'standby' is not where ldirectord runs (one of active, both)"),
    "unknown stack": (lambda d: d.update(stack="pacemaker"),
                      "stack: 'pacemaker' is not a director stack (one of heartbeat, keepalived)"),
    "heartbeat keys on keepalived": (lambda d: d.update(stack="keepalived"),
                                     'heartbeat.auth, heartbeat.bcast'),
    "vrrp keys on heartbeat": (lambda d: d.update(vrrp={"advert_int": 0.5}),
                               'vrrp.advert_int: set for the vrrp stack, but stack = "heartbeat"'),
    "advert finer than VRRPv3": (lambda d: d.pop("heartbeat")
                                 and d.update(stack="keepalived", vrrp={"advert_int": 0.125}),
                                 "vrrp.advert_int: 0.125 s: VRRPv3 counts adverts in hundredths"),
    "router id range": (lambda d: d.pop("heartbeat") and d.update(stack="keepalived", vrrp={"router_id": 256}),
                        "vrrp.router_id: 256 is out of range (1..255)"),
    "checktype off on keepalived": (lambda d: d.pop("heartbeat") and d.update(stack="keepalived")
                                    or d["services"][0].update(checktype="off"),
                                    'services[0].checktype: "off" is ldirectord\'s'),
    "vrrp ping node is the VIP": (lambda d: d.pop("heartbeat") and d.update(
        stack="keepalived", vrrp={"ping_nodes": ["192.168.0.105"]}), "vrrp.ping_nodes: 192.168.0.105 is the VIP"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_profile_is_rejected_with_a_message_that_says_what_to_fix(case):
    change, expected = BAD[case]
    with pytest.raises(profile.ProfileError) as err:
        profile.parse(mutate(change))
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_every_problem_is_reported_together():
    def two_errors(d):
        d["directors"][0]["address"] = "192.168.0.300"
        d["services"][0]["scheduler"] = "fastest"
    with pytest.raises(profile.ProfileError) as err:
        profile.parse(mutate(two_errors))
    assert len(err.value.problems) == 2


def test_keepalived_profile_reads_its_own_section_and_round_trips():
    c = profile.load(HOWTO.parent / "keepalived.toml")
    assert c.keepalived and c.failover is c.vrrp and c.vrrp.advert_int == 0.3
    # RFC 5798's Master_Down_Interval: 3 adverts and the skew (256 - 100) / 256 of one
    assert c.failover.deadtime_s == 1.083
    assert c.failover.balances_on_both  # keepalived's checkers run on both directors
    assert profile.parse(profile.to_dict(c)) == c
    assert "heartbeat" not in profile.to_dict(c)


def test_howto_teszt_oldal_page_is_flagged_as_a_trap():
    c = profile.parse(mutate(lambda d: d["services"][0].update(check_content="Teszt Oldal")))
    assert any("does not contain receive='Test Page'" in t for t in profile.traps(c))


def test_the_docs_show_the_reference_generated_from_the_declarations():
    from builder import cli
    doc = (HOWTO.parents[1] / "docs/profile-reference.md").read_text()
    assert cli.with_reference(doc) == doc, "run: python -m builder reference --update docs/profile-reference.md"
    assert "| `heartbeat.deadtime` |" in doc and "| `directors/real_servers.weight` | 1 |" in doc


def test_every_key_is_declared_once_and_documented():
    keys = [(section, f.name) for section, cls in profile.SECTIONS for f in profile._settings(cls)]
    assert len(keys) == len(set(keys))
    assert all(f.metadata["help"] for _, cls in profile.SECTIONS for f in profile._settings(cls))


def test_derived_values_are_properties_of_the_model():
    c = profile.load(HOWTO)
    assert c.heartbeat.deadtime_s == 30 and not c.heartbeat.ldirectord_on_both
    assert c.web_service.check_window == 12 and c.round == 2
    tuned = profile.load(HOWTO.with_name("three-web.toml"))
    assert tuned.heartbeat.deadtime_s == 2 and tuned.heartbeat.ldirectord_on_both
    assert tuned.round == 6 and [n.name for n in tuned.serving] == ["app1", "app2", "app3"]


def test_the_redundant_profile_has_a_link_and_round_trips():
    c = profile.load(HOWTO.with_name("redundant.toml"))
    assert c.link.interface == "eth1" and c.sync_interface == "eth1"
    assert [str(d.link_address) for d in c.directors] == ["10.255.0.1", "10.255.0.2"]
    assert profile.parse(profile.to_dict(c)) == c


def test_a_pinned_mac_renders_a_link_file_and_a_matching_network_config():
    from builder import render, seed
    data = mutate(lambda d: d["network"].update(interface="lan0") or d["directors"][0].update(mac="52:54:00:AA:BB:CC"))
    c = profile.parse(data)
    node = c.node("loadb1")
    assert node.mac == "52:54:00:aa:bb:cc"
    link = render.node_files(c, node, "x" * 32)[render.LINK_FILE].content
    assert "MACAddress=52:54:00:aa:bb:cc" in link and "Name=lan0" in link
    assert render.LINK_FILE not in render.node_files(c, c.node("loadb2"), "x" * 32)
    net_cfg = seed.seed_files(c, node, seed.Keys("x" * 32))["network-config"].decode()
    assert 'match: {macaddress: "52:54:00:aa:bb:cc"}' in net_cfg and 'set-name: "lan0"' in net_cfg
    assert profile.parse(profile.to_dict(c)) == c


def test_lint_finds_a_secret_file_that_is_not_there(tmp_path):
    text = HOWTO.read_text().replace("[heartbeat]\n", '[heartbeat]\nsecret_file = "cluster.key"\n', 1)
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(profile.ProfileError) as err:
        profile.load(tmp_path / "p.toml")
    assert err.value.problems == [f"heartbeat.secret_file: {tmp_path / 'cluster.key'} does not exist; create it "
                                  "(32 or more random characters) or remove secret_file to have the secret generated"]
    (tmp_path / "cluster.key").write_text("k" * 40)
    assert profile.load(tmp_path / "p.toml").heartbeat.secret_file == "cluster.key"
