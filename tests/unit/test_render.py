"""Rendered files for howto.toml equal the howto's text (tests/golden, verbatim) line for line,
except the documented corrections listed here."""
import hashlib
import tomllib
from pathlib import Path

import pytest

from builder import contract, profile, render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
CORRECTIONS = {  # howto line -> what we render, and why
    # Debian ships ipfail under /usr/libexec
    "respawn hacluster /usr/lib/heartbeat/ipfail": "respawn hacluster /usr/libexec/heartbeat/ipfail",
    # the secret comes from the secret file, never "password"
    "3 md5 password": "3 md5 S3cret-from-the-secret-file",
}


def tokens(text):
    """Lines as whitespace-split tokens: the wiki lost ldirectord.cf's indentation."""
    return [line.split() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["ha.cf", "haresources", "authkeys", "ldirectord.cf"])
def test_director_file_matches_the_howto(name):
    c = profile.load(ROOT / "profiles" / "howto.toml")
    files = render.director_files(c, c.node("loadb1"), "S3cret-from-the-secret-file")
    golden = GOLDEN.joinpath(name).read_text()
    expected = "\n".join(CORRECTIONS.get(line, line) for line in golden.splitlines())
    assert tokens(files[f"/etc/ha.d/{name}"].content) == tokens(expected)


def test_authkeys_is_root_only_and_ldirectord_options_are_indented():
    c = profile.load(ROOT / "profiles" / "howto.toml")
    files = render.director_files(c, c.node("loadb1"), "x" * 32)
    assert files["/etc/ha.d/authkeys"].mode == 0o600
    lines = files["/etc/ha.d/ldirectord.cf"].content.splitlines()
    after_virtual = lines[lines.index("virtual=192.168.0.105:80") + 1:]
    assert after_virtual and all(line.startswith("\t") for line in after_virtual if line)


def settings(text):
    """The lines that take effect: comments and blank lines dropped."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture
def howto():
    return profile.load(ROOT / "profiles" / "howto.toml")


def test_realserver_sysctl_sets_what_the_howto_sets(howto):
    files = render.node_files(howto, howto.node("webserver1"), None)
    rendered = files["/etc/sysctl.d/60-lvs-realserver.conf"].content
    assert settings(rendered) == settings(GOLDEN.joinpath("sysctl-realserver.conf").read_text())


def test_realserver_sysctl_follows_the_profile_interface(howto):
    from dataclasses import replace
    other = replace(howto, network=replace(howto.network, interface="ens2"))
    rendered = render.node_files(other, other.node("webserver1"), None)[render.SYSCTL_REALSERVER].content
    assert "net.ipv4.conf.ens2.arp_ignore = 1" in rendered and ".eth0." not in rendered


def test_vip_on_lo_stanza_is_the_howtos(howto):
    # the howto reloads all of /etc/sysctl.conf; we load only our own file, quietly
    fix = {"pre-up sysctl -p > /dev/null": "pre-up sysctl -q -p /etc/sysctl.d/60-lvs-realserver.conf"}
    golden = [fix.get(line, line) for line in GOLDEN.joinpath("interfaces-lo0").read_text().splitlines()]
    lines = render.node_files(howto, howto.node("webserver2"), None)["/etc/network/interfaces"].content.splitlines()
    start = lines.index("auto lo:0")
    assert lines[start:start + len(golden)] == golden


def test_each_node_gets_its_own_static_address(howto):
    for node in howto.nodes:
        text = render.node_files(howto, node, "k" * 32)["/etc/network/interfaces"].content
        assert f"\taddress {node.address}/24" in text
        assert ("auto lo:0" in text) == (not node.is_director)


def test_hosts_and_hostname_name_every_node(howto):
    files = render.node_files(howto, howto.node("loadb2"), "k" * 32)
    assert files["/etc/hostname"].content == "loadb2\n"
    hosts = files["/etc/hosts"].content
    for n in howto.nodes:
        assert f"{n.address}\t{n.name}.example.com\t{n.name}" in hosts


def test_check_page_contains_receive_and_index_names_the_server(howto):
    files = render.node_files(howto, howto.node("webserver2"), None)
    assert "Test Page" in files["/var/www/html/ldirector.html"].content
    assert 'data-server="webserver2"' in files["/var/www/html/index.html"].content


def test_directors_forward_and_serve_the_fallback_page(howto):
    files = render.node_files(howto, howto.node("loadb1"), "k" * 32)
    assert settings(files[render.SYSCTL_DIRECTOR].content) == [
        ["net.ipv4.ip_forward", "=", "1"], ["net.ipv4.vs.expire_nodest_conn", "=", "1"]]
    assert "temporarily unavailable" in files["/var/www/html/index.html"].content
    assert "/var/www/html/ldirector.html" not in files


def test_real_servers_never_get_the_secret_and_directors_need_it(howto):
    files = render.node_files(howto, howto.node("webserver1"), "k" * 32)
    assert not any("ha.d" in p for p in files)
    assert not any("k" * 32 in f.content for f in files.values())
    with pytest.raises(ValueError, match="loadb1: a director needs the heartbeat secret"):
        render.node_files(howto, howto.node("loadb1"), None)


def test_write_tree_keeps_modes(howto, tmp_path):
    render.write_tree(render.node_files(howto, howto.node("loadb1"), "k" * 32), tmp_path)
    assert (tmp_path / "etc/ha.d/authkeys").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc/hosts").stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.rglob(".*"))  # no temp files left behind


def test_fast_takeover_keys_the_group_by_its_sync_daemon_not_the_vip_vip_takeover_adds():
    """heartbeat skips a group whose key (first resource) is up: with the VIP first, a director
    taking its own group back found vip-takeover's VIP and started no sync master."""
    fast = profile.load(ROOT / "profiles" / "fast-failover.toml")
    haresources = render.director_files(fast, fast.node("loadb2"), "x" * 32)["/etc/ha.d/haresources"]
    assert tokens(haresources.content) == [
        ["loadb1", "\\"], ["LVSSyncDaemonSwap::master", "\\"], ["VIPaddr::192.168.0.105/24/eth0/192.168.0.255"]]
    data = tomllib.loads((ROOT / "profiles" / "fast-failover.toml").read_text())
    data["heartbeat"]["takeover"] = "heartbeat"  # IPaddr2 by heartbeat: the VIP moves first
    slow = profile.parse(data)
    haresources = render.director_files(slow, slow.node("loadb2"), "x" * 32)["/etc/ha.d/haresources"]
    assert tokens(haresources.content)[1][0].startswith("IPaddr2::")


def test_fast_takeover_runs_vip_takeover_and_sub_second_timings_are_milliseconds():
    fast = profile.load(ROOT / "profiles" / "fast-failover.toml")
    ha_cf = tokens(render.director_files(fast, fast.node("loadb1"), "x" * 32)["/etc/ha.d/ha.cf"].content)
    assert ["keepalive", "500ms"] in ha_cf and ["deadtime", "1500ms"] in ha_cf
    assert ["respawn", "root", "/usr/libexec/appliance/vip-takeover"] in ha_cf
    howto = profile.load(ROOT / "profiles" / "howto.toml")
    assert "vip-takeover" not in render.director_files(howto, howto.node("loadb1"), "x" * 32)["/etc/ha.d/ha.cf"].content


@pytest.mark.parametrize("seconds, text", [(2, "2"), (2.0, "2"), (0.5, "500ms"), (1.25, "1250ms")])
def test_heartbeat_times(seconds, text):
    assert render.heartbeat_time(seconds) == text


def test_a_dedicated_link_carries_heartbeat_and_the_connection_sync():
    c = profile.load(ROOT / "profiles" / "redundant.toml")
    files = render.node_files(c, c.node("lvs-b"), "x" * 32)
    ha_cf = files["/etc/ha.d/ha.cf"].content.splitlines()
    assert "ucast eth1 10.255.0.1" in ha_cf and "ping 172.20.40.1" in ha_cf
    assert "deadping 2" in ha_cf
    assert "iface eth1 inet static\n\taddress 10.255.0.2/30\n" in files["/etc/network/interfaces"].content
    assert files["/etc/default/lvssyncdaemonswap"].content == "SYNC_INTERFACE=eth1\nSYNC_ID=0\n"
    web = render.node_files(c, c.node("app1"), None)["/etc/network/interfaces"].content
    assert "eth1" not in web


def test_without_a_link_the_sync_stays_on_the_lan():
    c = profile.load(ROOT / "profiles" / "howto.toml")
    files = render.director_files(c, c.node("loadb1"), "x" * 32)
    assert files["/etc/default/lvssyncdaemonswap"].content == "SYNC_INTERFACE=eth0\nSYNC_ID=0\n"
    assert "ucast" not in files["/etc/ha.d/ha.cf"].content


def block(conf: str, header: str) -> str:
    """The text of the keepalived.conf block that starts with `header`, up to its closing brace."""
    start = conf.index(header)
    depth = 0
    for i in range(conf.index("{", start), len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[i], 0)
        if depth == 0:
            return conf[start:i + 1]
    raise AssertionError(f"{header} is not closed")


def test_keepalived_director_gets_vrrp_checks_and_sync_from_the_profile():
    c = profile.load(ROOT / "profiles" / "keepalived.toml")
    files = render.node_files(c, c.node("lvs-b"), None)  # keepalived needs no heartbeat secret
    assert not any(p.startswith("/etc/ha.d/") for p in files)
    conf = files[render.KEEPALIVED_CONF].content
    checkers = files[contract.KEEPALIVED_CHECKERS_CONF].content  # a daemon of their own: VRRP's file has none
    assert "virtual_server" not in conf and "vrrp_instance" not in checkers and "virtual_server" in checkers
    vrrp = block(conf, "vrrp_instance")
    # adverts on the link, unicast to the peer's link address; the VIP on the LAN NIC, tracked
    settings = [t for t in tokens(vrrp) if t[0] != "#"]
    assert settings[1:6] == [["state", "BACKUP"], ["interface", "eth1"], ["unicast_src_ip", "10.255.0.2"],
                                 ["unicast_peer", "{"], ["10.255.0.1"]]
    assert "172.20.40.100/24 brd 172.20.40.255 dev eth0" in vrrp
    assert ["advert_int", "0.3"] in tokens(vrrp) and ["priority", "100"] in tokens(vrrp)
    # the sync daemons run outside keepalived's VRRP process (docs/split-brain.md): the master
    # follows MASTER through the notify FIFO, on the link, and the VRRP state dump is on tmpfs
    assert "lvs_sync_daemon" not in conf.replace("# No lvs_sync_daemon", "")
    assert files["/etc/default/lvssyncdaemonswap"].content == "SYNC_INTERFACE=eth1\nSYNC_ID=51\n"
    assert ["vrrp_notify_fifo_script", "/usr/libexec/appliance/vrrp-state"] in tokens(block(conf, "global_defs"))
    # a new master's repeated announcements and their refresh come from the HA watchdog, as on
    # heartbeat (hawatch.Announcer): keepalived's own refresh would double them
    assert not {"vrrp_garp_master_refresh", "vrrp_garp_master_refresh_repeat"} & {
        t[0] for t in tokens(block(conf, "global_defs"))}
    # no state_dump_file (keepalived 2.2 rejects it): the unit's TMPDIR places the dump
    assert "state_dump_file" not in conf
    assert "notify" not in [t[0] for t in tokens(vrrp)]
    # the hand-over's track file: weight 0 (a non-zero value is a FAULT: a priority-0 advert while
    # the checkers keep the IPVS table), 0 at every start, tracked by the instance
    hand_over = block(conf, "track_file hand_over")
    assert [["file", f'"{contract.KEEPALIVED_HAND_OVER}"'], ["weight", "0"], ["init_file", "0"]] == [
        t for t in tokens(hand_over) if t[0] in ("file", "weight", "init_file")]
    assert block(vrrp, "track_file").split("{", 1)[1].split() == ["hand_over", "}"]
    assert c.failover.hand_over == f"echo 1 > {contract.KEEPALIVED_HAND_OVER}"  # what upgrade writes there
    assert 'script "/usr/bin/ping -n -q -c 1 -W 1 172.20.40.1"' in conf and ["weight", "-20"] in tokens(conf)
    vs = block(checkers, "virtual_server 172.20.40.100 80")
    assert ["sorry_server", "127.0.0.1", "80"] in tokens(vs) and ["lb_kind", "DR"] in tokens(vs)
    assert [t[:2] for t in tokens(vs) if t[0] in ("real_server", "weight")] == [
        ["real_server", "172.20.40.21"], ["weight", "3"], ["real_server", "172.20.40.22"], ["weight", "2"]]
    assert ["lb_algo", "wrr"] in tokens(vs)
    # the HTTP check compares the md5 of the very page the real servers get
    page = render.node_files(c, c.node("app1"), None)[f"{render.DOCROOT}/health.html"].content
    assert f"digest {hashlib.md5(page.encode()).hexdigest()}" in vs


def test_keepalived_auto_failback_prefers_the_first_director_by_less_than_a_ping_node():
    c = profile.load(ROOT / "profiles" / "keepalived.toml")
    data = profile.to_dict(c)
    data["vrrp"]["auto_failback"] = True
    c = profile.parse(data)
    prio = {d.name: int(next(t[1] for t in tokens(render.keepalived_files(c, d)[render.KEEPALIVED_CONF].content)
                             if t[0] == "priority")) for d in c.directors}
    assert prio["lvs-a"] > prio["lvs-b"] > prio["lvs-a"] - render.PING_WEIGHT
