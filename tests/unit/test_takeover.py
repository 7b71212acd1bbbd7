"""The fast takeover path of the director image: vip-takeover (heartbeat API client) and the
VIPaddr resource script, run on the host."""
import dataclasses
import importlib.machinery
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from builder import contract, profile, render

ROOT = Path(__file__).resolve().parents[2]
EXTRA = ROOT / "images" / "director" / "mkosi.extra"
VIPADDR = EXTRA / "etc" / "ha.d" / "resource.d" / "VIPaddr"


def _load_vip_takeover():
    path = EXTRA / "usr" / "libexec" / "appliance" / "vip-takeover"
    loader = importlib.machinery.SourceFileLoader("vip_takeover", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module  # as the running script is (__main__): its dataclass looks itself up
    loader.exec_module(module)
    return module


vt = _load_vip_takeover()


@pytest.fixture
def fast_files():
    c = profile.load(ROOT / "profiles" / "fast-failover.toml")
    return render.director_files(c, c.node("loadb2"), "x" * 32)


def test_reads_its_resource_and_peers_from_the_rendered_files(fast_files):
    assert vt.vip_arguments(fast_files["/etc/ha.d/haresources"].content) == ["192.168.0.105/24/eth0/192.168.0.255"]
    assert vt.cluster_nodes(fast_files["/etc/ha.d/ha.cf"].content) == {"loadb1", "loadb2"}
    with pytest.raises(ValueError, match="no VIPaddr:: resource"):
        vt.vip_arguments("loadb1 IPaddr2::192.168.0.105/24/eth0/192.168.0.255")


def test_takes_every_vip_of_a_profile_with_several():
    c = profile.load(ROOT / "profiles" / "fast-failover.toml")
    c = dataclasses.replace(c, services=(*c.services, profile.Service(vip=IPv4Address("192.168.0.106"), port=8080)))
    haresources = render.director_files(c, c.node("loadb1"), "x" * 32)["/etc/ha.d/haresources"].content
    assert vt.vip_arguments(haresources) == ["192.168.0.105/24/eth0/192.168.0.255",
                                             "192.168.0.106/24/eth0/192.168.0.255"]


def test_takes_ipv6_vips_too_in_the_form_heartbeat_gives_them():
    from tests.variants import VARIANTS
    c = profile.parse(VARIANTS["redundant+dual-stack"], "redundant+dual-stack")
    haresources = render.director_files(c, c.directors[0], "x" * 32)["/etc/ha.d/haresources"].content
    arguments = vt.vip_arguments(haresources)
    assert arguments[0] == f"{c.vip}/{c.network.prefixlen}/eth0/{c.network.subnet.broadcast_address}"
    assert "2001:0db8:0040:0000:0000:0000:0000:0100/64/eth0" in arguments
    assert len(arguments) == len(c.vips)


def test_messages_round_trip_through_heartbeats_framing():
    a, b = socket.socketpair()
    a.sendall(vt.encode({"t": "status", "src": "loadb1", "st": "dead"}))
    assert vt.read_message(b) == {"t": "status", "src": "loadb1", "st": "dead"}


def test_starts_the_vip_only_on_a_peers_death(tmp_path):
    """Feed heartbeat's messages through a socket; count the takeovers."""
    heartbeat, client = socket.socketpair()
    taken, logged, ended = [], [], []

    def take():
        taken.append(1)
        return "added"

    def run():
        try:
            vt.serve(client, "loadb2", {"loadb1", "loadb2"}, take, logged.append)
        except EOFError as e:  # heartbeat hung up: the daemon exits and heartbeat respawns it
            ended.append(e)
    thread = threading.Thread(target=run)
    thread.start()
    for message in [{"t": "status", "src": "loadb1", "st": "active"},   # peer up: nothing
                    {"t": "status", "src": "192.168.0.1", "st": "dead"},  # ping node
                    {"t": "ifstat", "node": "loadb1", "ifname": "eth0", "st": "dead"},
                    {"t": "status", "src": "loadb2", "st": "dead"},   # ourselves
                    {"t": "status", "src": "loadb1", "st": "dead"}]:  # the one that counts
        heartbeat.sendall(vt.encode(message))
    heartbeat.close()
    thread.join(30)
    assert ended and taken == [1] and logged == ["loadb1 is dead: added"]


def feed(messages, pings=frozenset({"192.168.0.1"}), me="loadb2"):
    """Run serve() on heartbeat's messages; what it took over, logged and stepped out for."""
    heartbeat, client = socket.socketpair()
    taken, logged, stepped = [], [], []
    thread = threading.Thread(target=lambda: pytest.raises(EOFError, vt.serve, client, me, {"loadb1", "loadb2"},
                                                          lambda: taken.append(1) or "added", logged.append,
                                                          pings, lambda: stepped.append(1)))
    thread.start()
    for message in messages:
        heartbeat.sendall(vt.encode({"t": "status", **message}))
    heartbeat.close()
    thread.join(30)
    return taken, logged, stepped


PEER_DEAD = {"src": "loadb1", "st": "dead"}
PING_DEAD = {"src": "192.168.0.1", "st": "dead"}


def test_steps_out_once_when_the_peer_and_every_ping_node_are_dead():
    taken, logged, stepped = feed([PEER_DEAD, PING_DEAD, PEER_DEAD, PING_DEAD])
    assert taken == [1] and stepped == [1]  # the VIP when the peer died, then out, once
    assert "killing heartbeat until a ping node answers" in logged[-1]


def test_cut_off_first_from_the_ping_node_it_never_takes_the_vip():
    taken, _, stepped = feed([PING_DEAD, PEER_DEAD])
    assert taken == [] and stepped == [1]


def test_stays_while_anything_answers():
    # the active's LAN cut: ping node dead, the peer heard on the link (ipfail's case)
    assert feed([PING_DEAD, {"src": "loadb1", "st": "active"}])[2] == []
    # the peer crashed, the ping node answers: a takeover, no step-out
    assert feed([PEER_DEAD]) [:3:2] == ([1], [])
    # the ping node came back before the peer died (its replies are "NS_st" messages)
    assert feed([PING_DEAD, {"t": "NS_st", "src": "192.168.0.1", "st": "ping"}, PEER_DEAD])[2] == []
    # two ping nodes: one still answers
    assert feed([PEER_DEAD, PING_DEAD], pings={"192.168.0.1", "192.168.0.2"})[2] == []
    # no ping nodes in ha.cf: never (nothing tells a partition from a dead peer)
    assert feed([PEER_DEAD, PING_DEAD], pings=set())[2] == []


def test_a_ping_node_that_still_answers_our_own_echo_keeps_it_in():
    """CI, stop 40: a guest stalled past deadping found its ping node "dead" 4 s after taking over
    from its crashed peer, stepped out and left nobody holding the VIP. heartbeat's verdict is
    asked again with our own echo; while the ping node answers, the director stays."""
    heartbeat, client = socket.socketpair()
    taken, logged, stepped, asked = [], [], [], []
    answers = iter(["192.168.0.1", "192.168.0.1", None])

    def confirm():
        asked.append(time.monotonic())
        return next(answers)
    thread = threading.Thread(target=lambda: pytest.raises(
        EOFError, vt.serve, client, "loadb2", {"loadb1", "loadb2"}, lambda: taken.append(1) or "added",
        logged.append, frozenset({"192.168.0.1"}), lambda: stepped.append(1), None, 30.0, confirm, 0.5))
    thread.start()
    heartbeat.sendall(vt.encode({"t": "status", **PEER_DEAD}) + vt.encode({"t": "status", **PING_DEAD}))
    time.sleep(2.5)  # heartbeat still says isolated: asked again every 0.5 s until nobody answers
    heartbeat.close()
    thread.join(30)
    assert taken == [1] and stepped == [1] and len(asked) == 3, (asked, logged)
    assert asked[1] - asked[0] >= 0.5
    assert logged[1] == ("heartbeat counts loadb1 and every ping node dead, but 192.168.0.1 answers a ping: "
                         "a stall, not a cut; staying")
    assert "killing heartbeat until a ping node answers" in logged[2]
    # heartbeat hears the ping node again: its word ends the question, nothing more is asked
    heartbeat, client = socket.socketpair()
    asked.clear()
    thread = threading.Thread(target=lambda: pytest.raises(
        EOFError, vt.serve, client, "loadb2", {"loadb1", "loadb2"}, lambda: "added", print,
        frozenset({"192.168.0.1"}), lambda: stepped.append(2), None, 30.0,
        lambda: asked.append(1) or "192.168.0.1", 0.5))
    thread.start()
    heartbeat.sendall(vt.encode({"t": "status", **PEER_DEAD}) + vt.encode({"t": "status", **PING_DEAD})
                      + vt.encode({"t": "NS_st", "src": "192.168.0.1", "st": "ping"}))
    time.sleep(1.5)
    heartbeat.close()
    thread.join(30)
    assert asked == [1] and stepped == [1]


def test_answering_names_the_first_ping_node_that_echoes():
    asked = []

    def probe(node, within):
        asked.append((node, within))
        return vt.ANSWERED if node == "192.168.0.2" else vt.SILENT
    assert vt.answering({"192.168.0.2", "192.168.0.1"}, 2.0, probe) == "192.168.0.2"
    assert asked == [("192.168.0.1", 2.0), ("192.168.0.2", 2.0)]
    assert vt.answering({"192.168.0.1"}, 2.0, probe) is None
    # a window this director did not live through proves nothing: never None (cut off) then
    said = {"192.168.0.1": vt.STALLED, "192.168.0.2": vt.SILENT}
    assert vt.answering(set(said), 2.0, lambda node, _: said[node]) == vt.STALLED


def ping_said(returncode: int, stdout: str):
    return lambda argv, **_: subprocess.CompletedProcess(argv, returncode, stdout)


def test_an_echo_window_with_too_few_probes_sent_was_a_stall_not_a_cut():
    """CI, stop 42: the standby stalled through heartbeat's deadping and then its own 2-s echo,
    stepped out and left its paused peer's VIP vacant for 70 s. ping sends no probe while its
    guest stalls, so the count it sent tells a lived-through silence from a stall."""
    stats = "--- 192.168.0.1 ping statistics ---\n{} packets transmitted, 0 received, 100% packet loss, time 1803ms\n"
    assert vt.echo("192.168.0.1", 2.0, ping_said(0, stats.replace("0 received", "1 received").format(1))) == vt.ANSWERED
    assert vt.echo("192.168.0.1", 2.0, ping_said(1, stats.format(10))) == vt.SILENT
    assert vt.echo("192.168.0.1", 2.0, ping_said(1, stats.format(6))) == vt.SILENT
    assert vt.echo("192.168.0.1", 2.0, ping_said(1, stats.format(3))) == vt.STALLED
    # the neighbour entry had failed already: ping is told at once and ends after one probe
    unreachable = stats.format(1).replace("0 received,", "0 received, +1 errors,")
    assert vt.echo("192.168.0.1", 2.0, ping_said(1, unreachable)) == vt.SILENT
    # ping could not send at all (no route: the interface is gone): cut off, not a stall
    assert vt.echo("192.168.0.1", 2.0, ping_said(2, "")) == vt.SILENT


def test_a_stalled_echo_neither_steps_out_nor_counts_as_an_answer():
    heartbeat, client = socket.socketpair()
    logged, stepped, asked = [], [], []
    answers = iter([vt.STALLED, vt.STALLED, None])

    def confirm():
        asked.append(time.monotonic())
        return next(answers)
    thread = threading.Thread(target=lambda: pytest.raises(
        EOFError, vt.serve, client, "loadb2", {"loadb1", "loadb2"}, lambda: "added",
        logged.append, frozenset({"192.168.0.1"}), lambda: stepped.append(1), None, 30.0, confirm, 5.0))
    thread.start()
    heartbeat.sendall(vt.encode({"t": "status", **PING_DEAD}) + vt.encode({"t": "status", **PEER_DEAD}))
    time.sleep(3.0)  # asked again about every second, not every confirm_every (5 s)
    heartbeat.close()
    thread.join(30)
    assert stepped == [1] and len(asked) == 3, (asked, logged)
    assert [line for line in logged if "stalled while it waited" in line] == [logged[0]]  # said once
    assert "killing heartbeat until a ping node answers" in logged[-1]
    # the peer's death came in the same read as the isolation: a stalled echo does not lose it
    assert any(line.startswith("loadb1 is dead: added") for line in logged), logged


def test_step_out_keeps_heartbeat_down_until_a_ping_node_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(vt, "CUT_OFF", tmp_path / "cut-off")
    vt.CUT_OFF.touch()
    ran, logged, tries = [], [], iter([False, False, True])
    vt.step_out(["192.168.0.105/24/eth0/192.168.0.255", "192.168.0.106/24/eth0/192.168.0.255"],
                {"192.168.0.1"}, logged.append,
                run=lambda argv, **_: ran.append(argv), reachable=lambda node: next(tries))
    assert not vt.CUT_OFF.exists()  # or the path unit would start the step-out again
    assert ran[:2] == [["systemctl", "kill", "--signal=KILL", "heartbeat.service"],
                       ["systemctl", "stop", "heartbeat.service"]]
    assert ["ip", "addr", "del", "192.168.0.105/24", "dev", "eth0"] in ran
    assert ["ip", "addr", "del", "192.168.0.106/24", "dev", "eth0"] in ran
    assert ["/etc/ha.d/resource.d/LVSSyncDaemonSwap", "master", "stop"] in ran
    assert ran[-1] == ["systemctl", "start", "heartbeat.service"]
    assert next(tries, "done") == "done" and "starting heartbeat again" in logged[-1]


def guarded(messages, answers, hold: float = 0.0, wait_limit: float = 30.0):
    """serve() with a peer that answers ARP for the VIP: `answers` is what each probe finds (the
    last repeats); heartbeat's socket stays open `hold` s after the messages."""
    heartbeat, client = socket.socketpair()
    taken, logged, probes = [], [], []

    def elsewhere():
        probes.append(1)
        return answers[min(len(probes), len(answers)) - 1]
    thread = threading.Thread(target=lambda: pytest.raises(
        EOFError, vt.serve, client, "loadb2", {"loadb1", "loadb2"}, lambda: taken.append(1) or "added",
        logged.append, frozenset({"192.168.0.1"}), None, elsewhere, wait_limit))
    thread.start()
    for message in messages:
        heartbeat.sendall(vt.encode({"t": "status", **message}))
    time.sleep(hold)
    heartbeat.close()
    thread.join(30)
    return taken, logged


MAC = "52:54:00:14:28:0c"


def test_a_dead_peer_that_still_answers_for_the_vip_keeps_it_until_it_lets_go():
    """A hung heartbeat's host answers ARP until its watchdog clears the VIP: taken then."""
    taken, logged = guarded([PEER_DEAD], [MAC, MAC, None], hold=3.5)
    assert taken == [1], logged
    assert logged[0] == f"loadb1 is dead to heartbeat, but {MAC} still answers for the VIP: taking nothing " \
                        "until nobody does (at most 30 s)"
    assert logged[1] == f"loadb1 is dead: added (after {MAC} let go of it)"
    # nobody answers (a crash, a pause, a cut cable): taken at once, one probe
    assert guarded([PEER_DEAD], [None]) == ([1], ["loadb1 is dead: added"])


def test_a_peer_whose_heartbeats_were_only_late_keeps_the_vip():
    # heartbeat hears it again: nothing taken, nothing more asked
    taken, logged = guarded([PEER_DEAD, {"src": "loadb1", "st": "active"}], [MAC], hold=1.5)
    assert taken == [] and logged[-1] == "loadb1 is alive after all: nothing taken"
    # still answering when the limit passes: it serves, left to it
    taken, logged = guarded([PEER_DEAD], [MAC], hold=2.5, wait_limit=1.0)
    assert taken == [] and logged[-1].endswith("still answered for the VIP after 1 s: not taken; it serves")


def test_reads_the_ping_nodes_from_ha_cf():
    c = profile.load(ROOT / "profiles" / "redundant.toml")
    ha_cf = render.director_files(c, c.node("lvs-a"), "x" * 32)["/etc/ha.d/ha.cf"].content
    assert vt.ping_nodes(ha_cf) == {"172.20.40.1"}


def test_vipaddr_status_checks_the_interface_and_rejects_a_bad_argument():
    held = subprocess.run(["sh", str(VIPADDR), "127.0.0.1/8/lo/127.255.255.255", "status"],
                          capture_output=True, text=True)
    assert held.stdout.strip() == "VIPaddr 127.0.0.1 running"
    absent = subprocess.run(["sh", str(VIPADDR), "127.0.0.77/8/lo/127.255.255.255", "status"],
                            capture_output=True, text=True)
    assert absent.stdout.strip() == "VIPaddr 127.0.0.77 stopped"
    bad = subprocess.run(["sh", str(VIPADDR), "127.0.0.1/8/lo", "start"], capture_output=True, text=True)
    assert bad.returncode == 2 and "IP/PREFIX/IFACE/BROADCAST" in bad.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="writes its PID file in /run")
def test_vipaddr_start_leaves_a_running_announcer_alone():
    """The HA watchdog's 10-s run of announcements after a takeover (or vip-takeover's) goes on
    when heartbeat's acquisition starts VIPaddr a second later: replacing it cut it short."""
    pidfile = Path(contract.SEND_ARP_PIDFILE.format(vip="127.0.0.1"))
    runner = subprocess.Popen(["bash", "-c", f"exec -a {contract.SEND_ARP} sleep 30"])
    try:
        time.sleep(0.2)
        pidfile.write_text(f"{runner.pid}\n")
        start = subprocess.run(["sh", str(VIPADDR), "127.0.0.1/8/lo/127.255.255.255", "start"],
                               capture_output=True, text=True, timeout=30)
        assert start.returncode == 0, start.stderr
        assert runner.poll() is None and pidfile.read_text().strip() == str(runner.pid)
        subprocess.run(["sh", str(VIPADDR), "127.0.0.77/8/lo/127.255.255.255", "stop"], check=True, timeout=30)
        assert runner.poll() is None  # another VIP's stop leaves it too
    finally:
        runner.kill()
        runner.wait()
        pidfile.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_vipaddr_start_leaves_a_vip_another_host_answers_for(tmp_path):
    """Two namespaces on a veth pair: while the other side holds the VIP, start adds nothing
    (and succeeds: vip-takeover takes it later); once it lets go, start adds it."""
    a, b = f"vt-a-{os.getpid()}", f"vt-b-{os.getpid()}"
    env = {**os.environ, "APPLIANCE_LIB": str(ROOT)}

    def sh(ns: str, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", command], capture_output=True, text=True,
                              env=env, check=False)
    try:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b],
                       check=True)
        sh(a, "ip addr add 10.9.8.1/24 dev va && ip addr add 10.9.8.100/24 dev va && ip link set va up")
        sh(b, "ip addr add 10.9.8.2/24 dev vb && ip link set vb up")
        start = f"sh {VIPADDR} 10.9.8.100/24/vb/10.9.8.255 start; echo rc=$?; ip -o addr show dev vb"
        out = sh(b, start).stdout
        assert "rc=0" in out and "10.9.8.100" not in out, out
        sh(a, "ip addr del 10.9.8.100/24 dev va")
        out = sh(b, start).stdout
        assert "rc=0" in out and "inet 10.9.8.100/24" in out, out
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "delete", ns], check=False)


TAKE_IN_A_NETNS = f"""
import importlib.machinery, importlib.util, subprocess, sys
loader = importlib.machinery.SourceFileLoader("vt", {str(EXTRA / "usr/libexec/appliance/vip-takeover")!r})
vt = importlib.util.module_from_spec(importlib.util.spec_from_loader("vt", loader))
sys.modules["vt"] = vt; loader.exec_module(vt)
vt.SEND_ARP = vt.SEND_UA = "/bin/true"  # heartbeat's send_arp and send_ua are in the image only
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
# IPv6 on a NIC that does duplicate address detection (a veth pair, both ends up)
subprocess.run("ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up",
               shell=True, check=True)
take = vt.vip_taker(["10.9.9.9/32/lo/10.9.9.9", "2001:0db8:0009:0000:0000:0000:0000:0009/64/v0",
                     "10.9.9.10/32/lo/10.9.9.10"])
print(take()); print(take())
print(subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_takes_the_vip_over_netlink_once():
    """The real netlink call, in a network namespace of its own (unshare -n)."""
    out = subprocess.run(["unshare", "-n", sys.executable, "-c", TAKE_IN_A_NETNS],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    v6 = "2001:0db8:0009:0000:0000:0000:0000:0009"
    assert out[0] == ("added 10.9.9.9/32 to lo, gratuitous ARP sent; "
                      f"added {v6}/64 to v0, neighbour advertisements sent; "
                      "added 10.9.9.10/32 to lo, gratuitous ARP sent")
    assert out[1] == f"10.9.9.9 was already on lo; {v6} was already on v0; 10.9.9.10 was already on lo"
    assert any("inet 10.9.9.9/32" in line for line in out[2:]) and any("inet 10.9.9.10/32" in line for line in out[2:])
    # usable at once: not "tentative" while DAD runs (~1 s), as the takeover must not wait for
    assert any("inet6 2001:db8:9::9/64" in line and "tentative" not in line for line in out[2:]), out[2:]
    # and never a source address (preferred lifetime 0): checks of IPv6 real servers leave from
    # the director's own address, else their answers go to the VIP each real server has on lo
    assert any("inet6 2001:db8:9::9/64" in line and "deprecated" in line and "preferred_lft 0sec" in line
               for line in out[2:]), out[2:]
