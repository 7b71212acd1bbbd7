"""The HA watchdog's decisions (firstboot/hawatch.py), and the image files that must agree
with the contract it reads."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from builder import contract as c
from builder import profile, render
from firstboot import hawatch, status
from firstboot.hawatch import Probe, Watch
from lab import wait
from tests.conftest import ROOT

HUNG = Probe(False, True, "HUNG", "no answer")
OK = Probe(True, False, "MASTER")
REFUSED = Probe(False, False, "ABSENT", "between two instances")
DIRECTOR = ROOT / "images/director/mkosi.extra"


def test_a_hang_restarts_only_after_the_misses_in_a_row():
    w = Watch()
    assert [w.observe(HUNG, 0) for _ in range(c.HAWATCH_MISSES - 1)] == ["wait"] * (c.HAWATCH_MISSES - 1)
    assert w.observe(HUNG, 1) == "restart"
    # an answer in between starts the count again
    assert w.observe(HUNG, 2) == "wait" and w.observe(OK, 3) == "ok" and w.observe(HUNG, 4) == "wait"


def test_a_refusal_is_not_a_hang():
    w = Watch()
    assert [w.observe(REFUSED, t) for t in range(10)] == ["wait"] * 10
    assert not w.restarts


def test_restarts_are_bounded_then_it_gives_up_and_a_quiet_window_resets_the_budget():
    w = Watch()
    actions = []
    for t in range(100):  # hung for ever, a probe a second
        actions.append(w.observe(HUNG, float(t)))
    assert actions.count("restart") == c.HAWATCH_RESTARTS
    assert actions[-1] == "give-up" and w.gave_up
    # restarts spread wider than the window are each allowed
    w = Watch()
    spread = [a for k in range(2 * c.HAWATCH_RESTARTS)
              for a in (w.observe(HUNG, k * c.HAWATCH_WINDOW),) * c.HAWATCH_MISSES]
    assert "give-up" not in spread and not w.gave_up


DUMP = """------< Global definitions >------
 State = not-this-one
------< VRRP Topology >------
 VRRP Instance = VI_51
   VRRP Version = 3
   State = BACKUP
   Master router = 10.255.0.1
 VRRP Instance = VI_52
   State = MASTER
"""


def test_vrrp_state_comes_from_each_instance_of_the_dump():
    assert hawatch.vrrp_states(DUMP) == ["BACKUP", "MASTER"]
    assert hawatch.vrrp_states("") == []


def test_the_image_scripts_use_the_contract_paths():
    vrrp_state = (DIRECTOR / c.KEEPALIVED_NOTIFY_SCRIPT.lstrip("/")).read_text()
    assert f"STATE={c.KEEPALIVED_STATE}\n" in vrrp_state and f"SYNC={c.SYNC_SCRIPT}\n" in vrrp_state
    sync = (DIRECTOR / c.SYNC_SCRIPT.lstrip("/")).read_text()
    assert f"[ -r {c.SYNC_DEFAULTS} ] && . {c.SYNC_DEFAULTS}" in sync
    prefix = c.SEND_ARP_PIDFILE.split("{")[0]
    assert f"arp_pidfile={prefix}$ip.pid" in (DIRECTOR / "etc/ha.d/resource.d/VIPaddr").read_text()
    takeover = (DIRECTOR / "usr/libexec/appliance/vip-takeover").read_text()
    assert takeover.count(f'"{prefix}{{ip}}.pid"') == 2
    reset = (DIRECTOR / c.HA_RESET.lstrip("/")).read_text()
    assert "-m firstboot.hawatch reset" in reset and os.access(DIRECTOR / c.HA_RESET.lstrip("/"), os.X_OK)
    dropin = (DIRECTOR / "etc/systemd/system/keepalived.service.d/appliance.conf").read_text()
    dump = Path(c.KEEPALIVED_STATE_DUMP)
    assert f"Environment=TMPDIR={dump.parent}\n" in dropin and f"RuntimeDirectory={dump.parent.name}\n" in dropin
    assert dump.name == "keepalived.data"  # what keepalived calls the VRRP dump in TMPDIR
    unit = (DIRECTOR / "usr/lib/systemd/system" / c.HAWATCH_UNIT).read_text()
    assert f"SyslogIdentifier={c.HAWATCH_TAG}\n" in unit
    assert "-m firstboot.hawatch watch" in unit and f"ConditionPathExists={c.STATE_DIR}/configured" in unit
    assert f"enable {c.HAWATCH_UNIT}" in (DIRECTOR / "usr/lib/systemd/system-preset/05-director.preset").read_text()


def test_a_killed_heartbeat_waits_for_the_peers_verdict_before_it_starts_again(monkeypatch):
    ran, slept = [], []
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: ran.append(argv))
    monkeypatch.setattr(hawatch, "reset", lambda info, log: ran.append(["reset"]))
    info = {"stack": "heartbeat", "deadtime": 30, "interface": "eth0", "vips": ["192.168.0.105"]}
    hawatch.restart("heartbeat.service", info, log=lambda _: None, sleep=slept.append)
    assert ran[0] == ["systemctl", "kill", "--signal=KILL", "heartbeat.service"] and ran[1] == ["reset"]
    assert slept == [32] and ran[-1] == ["systemctl", "start", "--no-block", "heartbeat.service"]
    ran.clear(), slept.clear()
    hawatch.restart("keepalived.service", {**info, "stack": "keepalived"}, log=lambda _: None, sleep=slept.append)
    assert slept == [] and ran[-1] == ["systemctl", "start", "--no-block", "keepalived.service"]


def test_a_duplicate_vip_makes_only_the_lower_address_step_out_and_only_after_the_limit():
    loser, keeper = hawatch.Duplicate(10, steps_out=True), hawatch.Duplicate(10, steps_out=False)
    peer = "52:54:00:00:00:02"
    for d in (loser, keeper):
        assert d.observe(True, None, 0) == "ok"           # holds it alone
        assert d.observe(False, None, 1) == "ok"          # holds nothing
        assert d.observe(True, peer, 2) == "wait"         # both hold it: give the stacks time
        assert d.observe(True, peer, 11.9) == "wait"
    assert loser.observe(True, peer, 12) == "step-out"
    assert keeper.observe(True, peer, 12) == "wait" and keeper.observe(True, peer, 100) == "wait"
    # the peer let go: the keeper tells the LAN at once, once
    assert keeper.observe(True, None, 101) == "announce" and keeper.observe(True, None, 102) == "ok"
    # a duplicate that ends by itself before the limit costs the loser nothing
    assert loser.observe(True, peer, 200) == "wait" and loser.observe(True, None, 205) == "ok"
    assert loser.observe(True, peer, 206) == "wait" and loser.observe(True, peer, 215) == "wait"
    # a keeper that lost the VIP has nothing to announce
    keeper.observe(True, peer, 300)
    assert keeper.observe(False, None, 301) == "ok"


def test_step_outs_share_the_restart_budget_with_hangs():
    w = hawatch.Watch()
    assert [w.restart_or_give_up(t) for t in range(c.HAWATCH_RESTARTS)] == ["restart"] * c.HAWATCH_RESTARTS
    assert w.observe(HUNG, 10) == "wait" and w.observe(HUNG, 11) == "give-up" and w.gave_up


def test_an_arp_probe_asks_without_telling_and_an_announcement_tells():
    from firstboot import arp
    mac = bytes.fromhex("525400000001")
    probe = arp._frame(mac, arp.REQUEST, b"\0" * 4, bytes([192, 168, 6, 240]))
    assert probe[:6] == b"\xff" * 6 and probe[6:12] == mac and probe[12:14] == b"\x08\x06"
    assert probe[20:22] == b"\0\x01" and probe[28:32] == b"\0\0\0\0" and probe[38:42] == bytes([192, 168, 6, 240])
    assert len(probe) == 42


def test_the_master_sync_daemon_follows_the_vip_once_a_mismatch_outlasts_a_transition():
    f = hawatch.SyncFollower(after=5)
    assert f.observe(True, True, 0) == "ok" and f.observe(False, False, 1) == "ok"
    # the VIP arrived, the stack is about to start the master: no repair within `after`
    assert f.observe(True, False, 2) == "wait" and f.observe(True, False, 6.9) == "wait"
    assert f.observe(True, True, 7) == "ok"                 # it did
    assert f.observe(True, False, 10) == "wait" and f.observe(True, False, 15) == "start"
    assert f.observe(False, True, 16) == "wait" and f.observe(False, True, 21) == "stop"


def test_a_repair_runs_the_sync_script_and_says_so(monkeypatch):
    ran, said, threads = [], [], ["master", "backup"]
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: ran.append(argv) or
                        hawatch.subprocess.CompletedProcess(argv, 0, "", ""))
    monkeypatch.setattr(hawatch, "sync_threads", lambda: threads)
    f = hawatch.SyncFollower(after=0)
    hawatch.follow_sync(f, ["192.168.6.240"], said.append)
    assert said == [] and ran == []                           # held, and the master runs
    threads = ["backup"]
    hawatch.follow_sync(f, ["192.168.6.240"], said.append)   # held, none runs: after=0 repairs at once
    assert ran == [[c.SYNC_SCRIPT, "master", "start"]]
    assert len(said) == 1 and said[0].startswith(c.HAWATCH_SYNC_REPAIRED) and "192.168.6.240" in said[0]


def test_vrrp_state_follows_transitions_and_ignores_keepalived_events(tmp_path):
    """keepalived's notify FIFO carries events beside transitions (MASTER_RX_LOWER_PRI, the
    priority changes): the master keeps its sync daemon and its state through them."""
    calls, state = tmp_path / "calls", tmp_path / "state"
    sync = tmp_path / "sync"
    sync.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    sync.chmod(0o755)
    script = (DIRECTOR / c.KEEPALIVED_NOTIFY_SCRIPT.lstrip("/")).read_text()
    script = script.replace(f"STATE={c.KEEPALIVED_STATE}\n", f"STATE={state}\n")
    script = script.replace(f"SYNC={c.SYNC_SCRIPT}\n", f"SYNC={sync}\n")
    assert f"ANNOUNCE={c.KEEPALIVED_ANNOUNCE}\n" in script
    script = script.replace(f"ANNOUNCE={c.KEEPALIVED_ANNOUNCE}\n", f"ANNOUNCE={tmp_path / 'announce'}\n")
    (tmp_path / "announce").write_text("")  # no VIP: nothing to announce
    (tmp_path / "vrrp-state").write_text(script)
    fifo = tmp_path / "fifo"  # keepalived's lines, as a file: the script reads it to the end
    fifo.write_text('INSTANCE "VI_51" MASTER 100\nINSTANCE "VI_51" MASTER_RX_LOWER_PRI 100\n'
                    'INSTANCE "VI_51" MASTER_PRIORITY 80\nGROUP "G" MASTER 0\n')
    run = subprocess.run(["sh", str(tmp_path / "vrrp-state"), str(fifo)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert calls.read_text().splitlines() == ["master start"] and state.read_text() == "MASTER\n"
    # a VIP let go is announced no more: the watchdog's run after the takeover ends with it
    prefix = c.SEND_ARP_PIDFILE.split("{")[0]
    assert f"for pidfile in {prefix}*.pid" in script and f"pkill -f '^{c.SEND_UA} '" in script
    (tmp_path / "vrrp-state").write_text(script.replace(prefix, str(tmp_path / "arp-")))
    runner = subprocess.Popen(["sleep", "30"])
    (tmp_path / "arp-172.20.40.100.pid").write_text(str(runner.pid))
    fifo.write_text('INSTANCE "VI_51" BACKUP_PRIORITY 80\nINSTANCE "VI_51" BACKUP 80\n')
    subprocess.run(["sh", str(tmp_path / "vrrp-state"), str(fifo)], check=True, timeout=30)
    assert calls.read_text().splitlines() == ["master start", "master stop"]
    assert state.read_text() == "BACKUP\n"
    assert runner.wait(timeout=5) == -signal.SIGTERM and not (tmp_path / "arp-172.20.40.100.pid").exists()


def test_vrrp_state_starts_each_vips_run_at_master_and_ends_them_when_it_lets_go(tmp_path):
    """At MASTER the rendered commands (render.announcements) run at once, in the background, one
    per VIP, with no Python to start; a BACKUP right after ends them, before their PID files exist."""
    log = tmp_path / "runs"
    fake = tmp_path / "heartbeat" / "send_arp"  # the path's /heartbeat/send_ marks a run of ours
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "start $*" >> {log}\n'
                    f'trap \'echo "end $*" >> {log}; kill $!; exit 0\' TERM\nsleep 30 & wait\n')
    fake.chmod(0o755)
    spec = profile.load(ROOT / "profiles/dual-stack-keepalived.toml")
    rendered = render.announcements(spec)
    lines = [line for line in rendered.splitlines() if not line.startswith("#")]
    assert len(lines) == len(spec.vips4) + len(spec.vips6) == 3
    (tmp_path / "announce").write_text(rendered.replace(c.SEND_ARP, str(fake)).replace(c.SEND_UA, str(fake)))
    script = (DIRECTOR / c.KEEPALIVED_NOTIFY_SCRIPT.lstrip("/")).read_text()
    script = script.replace(f"ANNOUNCE={c.KEEPALIVED_ANNOUNCE}\n", f"ANNOUNCE={tmp_path / 'announce'}\n")
    script = script.replace("STATE=/run/", f"STATE={tmp_path}/").replace("SYNC=/etc/", f"SYNC={tmp_path}/")
    (tmp_path / "ha.d" / "resource.d").mkdir(parents=True)
    (tmp_path / "ha.d" / "resource.d" / "LVSSyncDaemonSwap").write_text("#!/bin/sh\nsleep 0.5\n")
    (tmp_path / "ha.d" / "resource.d" / "LVSSyncDaemonSwap").chmod(0o755)
    (tmp_path / "vrrp-state").write_text(script.replace(c.SEND_ARP_PIDFILE.split("{")[0], str(tmp_path / "arp-")))
    fifo = tmp_path / "fifo"  # the runs have the sync daemon's start (half a second here) to begin
    fifo.write_text('INSTANCE "VI_51" MASTER 100\nINSTANCE "VI_51" BACKUP 80\n')
    subprocess.run(["sh", str(tmp_path / "vrrp-state"), str(fifo)], check=True, timeout=30)
    wait.until(lambda: log.exists() and len(log.read_text().splitlines()) == 6, 10, "three runs started and ended")
    said = log.read_text().splitlines()
    assert sorted(x for x in said if x.startswith("start ")) == sorted(f"start {' '.join(line.split()[1:])}"
                                                                      for line in lines)
    assert sorted(x for x in said if x.startswith("end ")) == sorted(f"end {' '.join(line.split()[1:])}"
                                                                    for line in lines)


def test_a_units_age_comes_from_its_cgroup_and_its_oldest_process(tmp_path):
    """No systemctl every second (a process and a D-Bus call to PID 1; under load it timed out
    and read a serving director as stopped): the unit's cgroup and /proc say it."""
    cgroups, proc = tmp_path / "cg", tmp_path / "proc"
    (cgroups / "heartbeat.service").mkdir(parents=True)
    proc.mkdir()
    (proc / "uptime").write_text("100.00 180.00\n")
    ticks = hawatch.CLOCK_TICKS
    for pid, started in (("41", 60.0), ("42", 70.0)):  # a command with spaces and parentheses
        (proc / pid).mkdir()
        fields = ["S"] + ["0"] * 18 + [str(int(started * ticks))] + ["0"] * 10
        (proc / pid / "stat").write_text(f"{pid} (heart (beat) x) " + " ".join(fields) + "\n")
    (cgroups / "heartbeat.service" / "cgroup.procs").write_text("42\n41\n43\n")  # 43: gone meanwhile
    assert abs(hawatch.unit_active_for("heartbeat.service", cgroups, proc) - 40.0) < 0.02
    (cgroups / "heartbeat.service" / "cgroup.procs").write_text("")
    assert hawatch.unit_active_for("heartbeat.service", cgroups, proc) is None
    assert hawatch.unit_active_for("keepalived.service", cgroups, proc) is None  # never started


def test_a_held_vip_is_a_local_address():
    assert status.is_local("127.0.0.1") and not status.is_local("192.0.2.77")
    info = {"interface": "lo", "vips": ["127.0.0.1", "192.0.2.77"]}
    assert status.held_vips(info) == ["127.0.0.1"] and status.held_vips({"interface": "lo"}) == []


def test_a_new_holder_announces_for_a_while_then_every_refresh_and_stops_what_it_lets_go(monkeypatch):
    a, v4, both = hawatch.Announcer(early=20, every=60), ["172.20.40.100"], ["172.20.40.100", "2001:db8:40::100"]
    assert a.observe(v4, 100) == (20, [])             # taken: a run of 20, half a second apart
    assert a.observe(v4, 101) == (0, []) and a.observe(v4, 159) == (0, [])
    assert a.observe(v4, 160) == (c.ANNOUNCE_REPEAT, []) and a.observe(v4, 161) == (0, [])  # the refresh
    assert a.observe(both, 170) == (20, [])           # a VIP taken late: a new run, for every held VIP
    assert a.observe(v4, 171) == (0, ["2001:db8:40::100"])  # one let go: its run stops, no new one
    assert a.observe([], 172) == (0, ["172.20.40.100"])     # a duplicate or a release: all stop
    assert a.observe(v4, 173) == (20, [])             # held again: the next takeover's run
    assert hawatch.Announcer().early * c.ANNOUNCE_INTERVAL_MS == c.ANNOUNCE_EARLY_FOR * 1000
    started, ran = [], []
    monkeypatch.setattr(hawatch.subprocess, "Popen", lambda argv, **kw: started.append(argv))
    monkeypatch.setattr(hawatch, "run", lambda argv, **kw: ran.append(argv))
    info = {"interface": "eth0", "prefixlen": 24, "prefixlen6": 64}
    hawatch.announce(["172.20.40.100", "2001:db8:40::100"], info, 20)
    ms = str(c.ANNOUNCE_INTERVAL_MS)
    assert started == [[c.SEND_ARP, "-i", ms, "-r", "20", "-p", "/run/vipaddr-send_arp-172.20.40.100.pid", "eth0",
                        "172.20.40.100", "auto", "not_used", "not_used"],
                       [c.SEND_UA, "-i", ms, "-c", "20", "2001:db8:40::100", "64", "eth0"]]
    assert ran == [["pkill", "-f", f"^{c.SEND_UA} .* (2001:db8:40::100) "]]  # the last run replaced


def test_the_takeovers_run_announces_only_what_is_held_now(monkeypatch):
    """`appliance announce` (keepalived's MASTER event) starts the early run for the VIPs held
    when it looks: an instance already back to BACKUP by then announces nothing."""
    runs = []
    monkeypatch.setattr(hawatch, "announce", lambda held, info, count: runs.append((held, count)))
    info = {"interface": "eth0", "vips": ["172.20.40.100", "2001:db8:40::100"]}
    monkeypatch.setattr(hawatch, "held_vips", lambda i: ["172.20.40.100"])
    assert hawatch.announce_takeover(info) == ["172.20.40.100"]
    assert runs == [(["172.20.40.100"], hawatch.Announcer.early)]
    monkeypatch.setattr(hawatch, "held_vips", lambda i: [])
    assert hawatch.announce_takeover(info) == [] and len(runs) == 1


def test_stopping_an_ipv4_vips_announcements_ends_its_send_arp_by_its_pid_file(tmp_path, monkeypatch):
    monkeypatch.setattr(c, "SEND_ARP_PIDFILE", str(tmp_path / "send_arp-{vip}.pid"))
    runner = subprocess.Popen(["sleep", "30"])
    (tmp_path / "send_arp-172.20.40.100.pid").write_text(str(runner.pid))
    hawatch.stop_announcing(["172.20.40.100", "172.20.40.101"])  # the second has none: nothing to do
    assert runner.wait(timeout=5) == -signal.SIGTERM and not (tmp_path / "send_arp-172.20.40.100.pid").exists()


def test_a_burst_of_split_brains_each_cured_by_a_step_out_never_spends_the_budget():
    w = hawatch.Watch()
    t = 0.0
    for _ in range(3 * c.HAWATCH_RESTARTS):  # a dual master a minute, each healed by the step-out
        assert w.step_out(t) == "restart"
        assert not w.settled(False, t + 5)                       # restarting: STARTING, not answering
        assert not w.settled(True, t + 25)                       # back as standby, no second holder
        assert w.settled(True, t + 25 + c.HAWATCH_CURED)         # healthy long enough: a cure
        t += 60
    assert not w.gave_up and w.restarts == []
    # bench (session 29): a dual master every ~55 s, the next 27 s after the restart; the fresh
    # heartbeat hears its peer within seconds, and that is the cure
    for _ in range(3 * c.HAWATCH_RESTARTS):
        assert w.step_out(t) == "restart"
        assert not w.settled(True, t + 10)                       # back, the peer not heard yet
        assert w.settled(True, t + 12, heard=True)
        t += 40
    assert not w.gave_up and w.restarts == []


def test_step_outs_that_cure_nothing_still_end_in_a_give_up_and_hangs_keep_their_places():
    w = hawatch.Watch()
    # a third host answers for the VIP: the duplicate never ends, no healthy spell between
    verdicts = [w.step_out(t * 20.0) for t in range(c.HAWATCH_RESTARTS + 1)]
    assert verdicts[-1] == "give-up" and w.gave_up
    w = hawatch.Watch()  # hearing the peer cures nothing while a second holder is still there
    assert [w.step_out(t * 20.0) for t in range(c.HAWATCH_RESTARTS)] == ["restart"] * c.HAWATCH_RESTARTS
    assert not w.settled(False, 70, heard=True) and len(w.restarts) == c.HAWATCH_RESTARTS
    # restarts after hangs are not given back by a healthy spell
    w = hawatch.Watch()
    assert w.restart_or_give_up(0) == "restart"
    assert not w.settled(True, 10) and not w.settled(True, 10 + 2 * c.HAWATCH_CURED)
    assert w.restarts == [0]
    # a healthy spell interrupted (a second holder again) starts over
    assert w.step_out(100) == "restart"
    w.settled(True, 120)
    w.settled(False, 140)
    assert not w.settled(True, 145) and not w.settled(True, 145 + c.HAWATCH_CURED - 1)
    assert w.settled(True, 145 + c.HAWATCH_CURED) and w.restarts == [0]


def test_ipv6_vips_are_neither_arp_probed_nor_left_as_a_source_address(monkeypatch):
    """On a dual-stack profile the watchdog crash-looped: it asked ARP for an IPv6 VIP
    (AddressValueError), and an IPv6 VIP added by heartbeat's IPv6addr or keepalived stayed
    preferred, so ldirectord's checks left from it and every IPv6 real server was quiesced."""
    info = {"interface": "eth0", "vips": ["172.20.40.100", "2001:db8:40::100"], "prefixlen6": 64}
    asked = []
    monkeypatch.setattr(hawatch, "held_vips", lambda i: list(i["vips"]))
    monkeypatch.setattr(hawatch.arp, "other_holder", lambda iface, ip: asked.append(ip))
    assert hawatch.duplicate_of(info) == (info["vips"], None) and asked == ["172.20.40.100"]
    d = hawatch.Deprecator()
    assert d.due(info["vips"]) == ["2001:db8:40::100"]       # newly held: deprecate it
    assert d.due(info["vips"]) == []                          # once per holding
    assert d.due(["172.20.40.100"]) == [] and d.due(info["vips"]) == ["2001:db8:40::100"]  # held again
    ran = []
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: ran.append(argv))
    assert hawatch.deprecate(["2001:db8:40::100"], info, {"2001:db8:40::100": 0x80}) == []
    assert ran == [["ip", "-6", "addr", "change", "2001:db8:40::100/64", "dev", "eth0", "nodad", "preferred_lft", "0"]]


IF_INET6 = """\
20010db8004000000000000000000011 02 40 00 80     eth0
20010db8004000000000000000000100 02 40 00 {flags}     eth0
20010db8004000000000000000000101 02 40 00 a2     eth1
fe80000000000000505400fffe14280b 02 40 20 80     eth0
"""


def test_a_released_or_failed_ipv6_vip_is_never_added_back_and_a_dadfailed_copy_is_removed(monkeypatch, tmp_path):
    """On keepalived + IPv6 a forced dual master left the backup with its VIP `dadfailed
    tentative` for good: the watchdog's `ip addr change` (to deprecate it) ran just after
    keepalived released it, and the kernel adds an address a change does not find, here
    without nodad. Only a VIP that is there, usable and preferred is deprecated (keeping
    nodad); one in DAD is asked again; a dadfailed copy is removed with a journal line."""
    info = {"interface": "eth0", "vips": ["2001:db8:40::100", "2001:db8:40::101"], "prefixlen6": 64}
    table = tmp_path / "if_inet6"

    def flags(value: str) -> dict[str, int]:
        table.write_text(IF_INET6.format(flags=value))
        return hawatch.ipv6_vip_flags(info, table)
    # ::101 is on eth1, not the cluster NIC; the node's own ::11 is not a VIP
    assert flags("80") == {"2001:db8:40::100": 0x80}
    ran, said = [], []
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: ran.append(argv))
    vip = ["2001:db8:40::100"]
    assert hawatch.deprecate(vip, info, {}) == [] and ran == []                     # released: not added back
    assert hawatch.deprecate(vip, info, flags("a2")) == [] and ran == []            # deprecated already (nodad)
    assert hawatch.deprecate(vip, info, flags("c0")) == vip and ran == []           # in DAD: ask again
    assert hawatch.drop_dadfailed(info, flags("80"), said.append) == [] and ran == []
    assert hawatch.drop_dadfailed(info, flags("e8"), said.append) == vip            # dadfailed deprecated tentative
    assert ran == [["ip", "addr", "del", "2001:db8:40::100/64", "dev", "eth0"]]
    assert c.HAWATCH_DADFAILED in said[0] and "2001:db8:40::100" in said[0]
    d = hawatch.Deprecator()
    assert d.due(vip) == vip and d.due(vip) == []
    d.retry(vip)
    assert d.due(vip) == vip                                                         # asked again once DAD is over


def test_a_vip_nobody_holds_restarts_the_claimant_first_then_the_higher_address():
    """Both directors up, neither holding the VIP (heartbeat v1 watches none of its resources):
    the stack that claims it is restarted past the limit; when neither claims it, only the
    higher address acts, after twice the limit; a holder found in between resets the clock."""
    lower, higher = hawatch.Vacancy(60, higher=False), hawatch.Vacancy(60, higher=True)
    for v in (lower, higher):
        assert v.observe(False, True, 0) == "ok"
        assert v.observe(True, True, 1) == "wait" and v.observe(True, True, 60.9) == "wait"
    assert lower.observe(True, True, 61) == "restart" and higher.observe(True, True, 61) == "restart"
    # neither claims it: the lower address never acts, the higher one after twice the limit
    for v in (lower, higher):
        assert v.observe(True, False, 100) == "wait" and v.observe(True, False, 219) == "wait"
    assert lower.observe(True, False, 1000) == "wait"
    assert higher.observe(True, False, 220) == "restart"
    # a takeover that ends the vacancy in time costs nothing
    assert higher.observe(True, True, 300) == "wait" and higher.observe(False, True, 350) == "ok"
    assert higher.observe(True, True, 351) == "wait" and higher.observe(True, True, 410) == "wait"


def test_a_vip_nobody_holds_is_put_back_by_the_claimant_before_any_restart():
    """The claimant adds the VIPs itself past mend_after (the higher address first when both
    claim them), once a vacancy; the restart past the limit remains for a mend that did not hold."""
    lower, higher = (hawatch.Vacancy(60, higher=h, mend_after=13) for h in (False, True))
    for v in (lower, higher):
        assert v.observe(True, True, 0) == "wait" and v.observe(True, True, 12.9) == "wait"
    assert higher.observe(True, True, 13) == "mend"
    assert lower.observe(True, True, 13) == "wait" and lower.observe(True, True, 26) == "mend"
    # the mend held: the vacancy is over, and the next one may be mended again
    assert higher.observe(False, True, 14) == "ok" and higher.observe(True, True, 20) == "wait"
    assert higher.observe(True, True, 33) == "mend"
    # a mend that did not hold: no second mend, the restart at the limit
    assert higher.observe(True, True, 40) == "wait" and higher.observe(True, True, 80) == "restart"
    # neither claims it: nothing to mend for anyone
    nobody = hawatch.Vacancy(60, higher=True, mend_after=13)
    assert all(nobody.observe(True, False, t) == "wait" for t in (0, 13, 26, 119))


def test_a_mended_vacancy_adds_every_vip_announces_them_and_says_so(monkeypatch):
    said, ran, announced = [], [], []
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: ran.append(argv))
    monkeypatch.setattr(hawatch, "announce", lambda vips, info: announced.extend(vips))
    monkeypatch.setattr(hawatch, "restart", lambda *a, **k: pytest.fail("restarted instead of mending"))
    now = [0.0]
    monkeypatch.setattr(hawatch.time, "monotonic", lambda: now[0])
    info = {"stack": "heartbeat", "interface": "eth0", "prefixlen": 24, "prefixlen6": 64,
            "vips": ["172.20.40.100", "2001:db8:40::100"]}
    w, v = hawatch.Watch(), hawatch.Vacancy(72, higher=True, mend_after=13)
    hawatch.check_vacancy(v, w, "heartbeat.service", info, "local", True, said.append)
    now[0] = 13.0
    hawatch.check_vacancy(v, w, "heartbeat.service", info, "local", True, said.append)
    assert ["ip", "addr", "add", "172.20.40.100/24", "dev", "eth0", "brd", "+"] in ran
    assert ["ip", "addr", "add", "2001:db8:40::100/64", "dev", "eth0", "nodad", "preferred_lft", "0"] in ran
    assert announced == info["vips"] and w.restarts == []
    assert c.HAWATCH_VACANCY_MENDED in said[-1] and "for 13 s" in said[-1] and "(local)" in said[-1]


def test_a_stack_claims_the_vip_in_its_own_terms():
    assert hawatch.claims_vip("heartbeat", "local") and hawatch.claims_vip("heartbeat", "foreign")
    assert hawatch.claims_vip("heartbeat", "all")
    assert not any(hawatch.claims_vip("heartbeat", s) for s in ("none", "transition", "?"))
    assert hawatch.claims_vip("keepalived", "MASTER") and not hawatch.claims_vip("keepalived", "BACKUP")
    assert not hawatch.claims_vip("keepalived", "FAULT")


def test_vacant_means_no_answer_for_the_first_ipv4_vip_and_a_peer_that_answers(monkeypatch):
    info = {"interface": "eth0", "vips": ["2001:db8:40::100", "172.20.40.100", "172.20.40.101"],
            "vacancy_limit": 66}
    asked, holder = [], {"172.20.40.100": None}
    monkeypatch.setattr(hawatch.arp, "other_holder", lambda iface, ip: asked.append(ip) or holder[ip])
    assert hawatch.vacant(info, lambda: True) and asked == ["172.20.40.100"]
    assert not hawatch.vacant(info, lambda: False)           # a peer down or cut off: the stack's business
    # ... unless this director's stack claims the VIPs and a real server answers (bench, session
    # 29: heartbeat said "all" after a takeover that ran no resource script, its peer paused)
    assert hawatch.vacant(info, lambda: False, claims=True, lan_answers=lambda: True)
    assert not hawatch.vacant(info, lambda: False, claims=True, lan_answers=lambda: False)  # its own cable
    assert not hawatch.vacant(info, lambda: False, claims=False, lan_answers=lambda: True)  # Deaf's
    holder["172.20.40.100"] = "52:54:00:14:28:0c"
    assert not hawatch.vacant(info, lambda: True)            # somebody holds it
    assert not hawatch.vacant({**info, "vips": ["2001:db8:40::100"]}, lambda: True)  # no ARP for IPv6
    assert not hawatch.vacant({k: v for k, v in info.items() if k != "vacancy_limit"}, lambda: True)  # an old seed

    def down(iface, ip):
        raise OSError("Network is down")
    monkeypatch.setattr(hawatch.arp, "other_holder", down)
    assert not hawatch.vacant(info, lambda: True)


def test_a_vacancy_restart_logs_why_and_comes_from_the_restart_budget(monkeypatch):
    said, restarted = [], []
    monkeypatch.setattr(hawatch, "restart", lambda unit, info, log, start=True, wait=True: restarted.append(start))
    now = [0.0]
    monkeypatch.setattr(hawatch.time, "monotonic", lambda: now[0])
    w, v = hawatch.Watch(), hawatch.Vacancy(60, higher=False)
    info = {"stack": "heartbeat"}
    hawatch.check_vacancy(v, w, "heartbeat.service", info, "local", True, said.append)
    assert restarted == [] and c.HAWATCH_VACANT in said[0] and "in 60 s" in said[0]
    now[0] = 61.0
    hawatch.check_vacancy(v, w, "heartbeat.service", info, "local", True, said.append)
    assert restarted == [True] and len(w.restarts) == 1 and w.step_outs == w.restarts
    assert c.HAWATCH_RESTARTED in said[1] and "claims it" in said[1]
    # a vacancy seen at boot, then the VIP held: the clock starts again at the next vacancy
    now[0] = 100.0
    hawatch.check_vacancy(v, w, "heartbeat.service", info, "transition", True, said.append)
    now[0] = 120.0
    hawatch.check_vacancy(v, w, "heartbeat.service", info, "local", False, said.append)
    now[0] = 170.0
    hawatch.check_vacancy(v, w, "heartbeat.service", info, "local", True, said.append)
    assert v.since == 170.0 and restarted == [True]


def test_a_duplicate_step_out_logs_why_and_a_spent_budget_gives_up(monkeypatch):
    said, restarted = [], []
    monkeypatch.setattr(hawatch, "restart", lambda unit, info, log, start=True, wait=True: restarted.append(start))
    monkeypatch.setattr(hawatch, "duplicate_of", lambda info: (["172.20.40.100"], "52:54:00:14:28:0c"))
    now = [0.0]
    monkeypatch.setattr(hawatch.time, "monotonic", lambda: now[0])
    info = {"address": "172.20.40.11", "peer_address": "172.20.40.12"}
    w, dup = hawatch.Watch(), hawatch.Duplicate(10, steps_out=True)
    assert hawatch.check_duplicate(dup, w, "heartbeat.service", info, said.append)[0] == ["172.20.40.100"]
    now[0] = 11.0
    assert hawatch.check_duplicate(dup, w, "heartbeat.service", info, said.append) == ([], "52:54:00:14:28:0c")
    assert restarted == [True] and w.step_outs == [11.0]
    assert said[-1].startswith("both directors held the VIP for 10 s and 172.20.40.11 is the lower address: ")
    assert f"{c.HAWATCH_STEPPED_OUT}, {c.HAWATCH_RESTARTED} heartbeat.service (restart 1 of" in said[-1]
    w.restarts = [11.0] * c.HAWATCH_RESTARTS  # the budget spent
    for t in (12.0, 23.0):
        now[0] = t
        hawatch.check_duplicate(dup, w, "heartbeat.service", info, said.append)
    assert restarted == [True, False] and w.gave_up and c.HAWATCH_GAVE_UP in said[-1]
    assert f"systemctl restart {c.HAWATCH_UNIT}" in said[-1]


def test_a_split_vip_set_is_mended_towards_the_holder_of_the_first_ipv4_vip():
    """CI (stop 35): the IPv4 VIP on one director, the IPv6 one on the other, both heartbeats
    "local". The anchor's holder adds what it lacks (while its stack claims the VIPs); the other
    drops its strays (while another host answers for the anchor); both only past the limit."""
    info = {"interface": "eth0", "vips": ["2001:db8:40::100", "172.20.40.100", "172.20.40.101"]}
    elsewhere = lambda vip: vip == "172.20.40.100"  # noqa: E731
    nowhere = lambda vip: False  # noqa: E731
    assert hawatch.split_of(info, ["172.20.40.100"], True, nowhere) == ("complete",
                                                                        ["2001:db8:40::100", "172.20.40.101"])
    assert hawatch.split_of(info, ["172.20.40.100"], False, nowhere) is None   # the stack does not claim them
    assert hawatch.split_of(info, info["vips"], True, nowhere) is None         # all of them: no split
    assert hawatch.split_of(info, [], True, elsewhere) is None                 # none: the vacancy's business
    assert hawatch.split_of(info, ["2001:db8:40::100"], False, elsewhere) == ("drop", ["2001:db8:40::100"])
    assert hawatch.split_of(info, ["2001:db8:40::100"], True, nowhere) is None  # nobody has the anchor
    assert hawatch.split_of({**info, "vips": ["2001:db8:40::100"]}, ["2001:db8:40::100"], True, elsewhere) is None
    # who completes: a stack that claims the VIPs, or a heartbeat sat in transition (suite, session 30)
    assert hawatch.completes_split("heartbeat", "transition") and hawatch.completes_split("heartbeat", "local")
    assert not hawatch.completes_split("heartbeat", "none") and not hawatch.completes_split("keepalived", "BACKUP")
    assert hawatch.completes_split("keepalived", "MASTER")
    s = hawatch.Split(12)
    fix = ("drop", ["2001:db8:40::100"])
    assert s.observe(fix, 0) is None and s.observe(fix, 11.9) is None
    assert s.observe(None, 12) is None and s.observe(fix, 13) is None   # mended meanwhile: the clock starts over
    assert s.observe(fix, 25) == fix and s.since is None


def test_mending_a_split_adds_ipv6_without_dad_and_announces_or_drops_the_strays(monkeypatch):
    info = {"interface": "eth0", "vips": ["172.20.40.100", "2001:db8:40::100"], "prefixlen": 24, "prefixlen6": 64}
    ran, announced, said = [], [], []
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: ran.append(argv))
    monkeypatch.setattr(hawatch, "announce", lambda vips, info: announced.append(vips))
    hawatch.mend_split(("complete", ["2001:db8:40::100"]), info, ["172.20.40.100"], 12, said.append)
    assert ran == [["ip", "addr", "del", "2001:db8:40::100/64", "dev", "eth0"],  # a copy that failed DAD
                   ["ip", "addr", "add", "2001:db8:40::100/64", "dev", "eth0", "nodad", "preferred_lft", "0"]]
    assert announced == [["2001:db8:40::100"]] and c.HAWATCH_SPLIT in said[0] and "added" in said[0]
    ran.clear()
    hawatch.mend_split(("drop", ["2001:db8:40::100"]), info, ["2001:db8:40::100"], 12, said.append)
    assert ran == [["ip", "addr", "del", "2001:db8:40::100/64", "dev", "eth0"]] and announced == [["2001:db8:40::100"]]
    assert "dropped" in said[1] and "172.20.40.100" in said[1]


def test_only_the_first_ipv4_vip_answered_elsewhere_makes_a_second_master(monkeypatch):
    """A CI run (session 24): the IPv6 VIP and a second IPv4 one moved to the standby; the
    active's split repair added them back, ARP then heard the standby on 172.20.40.101, and the
    standby was stepped out as a second master instead of dropping its strays."""
    info = {"interface": "eth0", "vips": ["172.20.40.100", "2001:db8:40::100", "172.20.40.101"]}
    answers = {"172.20.40.100": None, "172.20.40.101": "52:54:00:14:28:0c"}
    asked = []
    monkeypatch.setattr(hawatch.arp, "other_holder", lambda iface, ip: asked.append(ip) or answers[ip])
    monkeypatch.setattr(hawatch, "held_vips", lambda i: list(i["vips"]))
    assert hawatch.duplicate_of(info) == (info["vips"], None) and asked == ["172.20.40.100"]
    # the standby's strays: it does not hold the anchor, so it asks nothing and is no second master
    monkeypatch.setattr(hawatch, "held_vips", lambda i: ["2001:db8:40::100", "172.20.40.101"])
    asked.clear()
    assert hawatch.duplicate_of(info) == (["2001:db8:40::100", "172.20.40.101"], None) and asked == []
    # its split check drops them, whatever its stack's state (a heartbeat in transition claims nothing)
    assert hawatch.split_of(info, ["2001:db8:40::100", "172.20.40.101"], False,
                            lambda vip: vip == "172.20.40.100") == ("drop", ["2001:db8:40::100", "172.20.40.101"])
    # both hold the anchor: a second master
    answers["172.20.40.100"] = "52:54:00:14:28:0d"
    monkeypatch.setattr(hawatch, "held_vips", lambda i: list(i["vips"]))
    assert hawatch.duplicate_of(info) == (info["vips"], "52:54:00:14:28:0d")


def test_heartbeat_is_probed_with_one_api_call(monkeypatch):
    """rscstatus alone: it signs on as hbstatus would, so a silent heartbeat is a hang, a
    refused sign-on an absence, and an answer carries the state."""
    class Done:
        def __init__(self, stdout="", returncode=0, stderr=""):
            self.stdout, self.returncode, self.stderr = stdout, returncode, stderr
    answers = iter([None, Done("", 2, "Cannot signon with heartbeat"), Done("transition\n")])
    asked = []

    def run(argv, timeout):
        asked.append(argv)
        return next(answers)
    monkeypatch.setattr(hawatch, "run", run)
    hung, absent, up = (hawatch.probe_heartbeat() for _ in range(3))
    assert hung.hung and not hung.answering
    assert not absent.hung and not absent.answering and "signon" in absent.detail
    assert up.answering and up.state == "transition"
    assert asked == [["cl_status", "rscstatus"]] * 3


def test_a_heartbeat_stuck_in_transition_while_its_peer_serves_is_restarted_once_the_limit_passes():
    """CI (sessions 24, 25): a fresh heartbeat sat in rscstatus "transition" for the rest of the
    run, holding nothing; no other check moved it."""
    info = {"stack": "heartbeat", "vips": ["2001:db8:40::100", "172.20.40.100"]}
    asked = []

    def elsewhere(vip):
        asked.append(vip)
        return True
    assert hawatch.stuck_in_transition(info, "transition", [], elsewhere)
    assert asked == ["172.20.40.100"]  # the first IPv4 VIP says who serves
    assert not hawatch.stuck_in_transition(info, "transition", ["172.20.40.100"], elsewhere)  # it serves
    assert not hawatch.stuck_in_transition(info, "none", [], elsewhere)
    assert not hawatch.stuck_in_transition(info, "transition", [], lambda vip: False)  # nobody serves: Vacancy's
    assert not hawatch.stuck_in_transition({**info, "stack": "keepalived"}, "transition", [], elsewhere)
    assert not hawatch.stuck_in_transition({**info, "vips": ["2001:db8:40::100"]}, "transition", [], elsewhere)
    stuck = hawatch.Stuck(66)
    assert not stuck.lasted(True, 0) and not stuck.lasted(True, 65)
    assert stuck.lasted(True, 66)
    assert not stuck.lasted(True, 67)  # the clock starts again after a restart
    assert not stuck.lasted(False, 100) and not stuck.lasted(True, 101) and not stuck.lasted(True, 166)
    assert stuck.lasted(True, 167)


def test_a_stack_deaf_to_its_peers_absence_is_restarted_once_while_a_real_server_answers():
    """Bench (session 28): a heartbeat restarted 66 s before stayed deaf to its peer's 73-s
    pause; nobody held the VIP and no check covered it (the peer did not answer: no vacancy)."""
    info = {"stack": "heartbeat", "vips": ["2001:db8:40::100", "172.20.40.100"], "peer_address": "172.20.40.12",
            "initdead": 30, "witnesses": ["172.20.40.21", "172.20.40.22"]}
    answers = {"172.20.40.22"}  # one real server; not the peer, nobody for the VIP
    asked = []

    def elsewhere(address):
        asked.append(address)
        return address in answers
    up = True  # past its first verdict (FirstVerdict)
    link, busy = [False], [False]

    def deaf_to_peer(info, state, held, up, elsewhere):
        return hawatch.deaf_to_peer(info, state, held, up, elsewhere, lambda: link[0], lambda: busy[0])
    assert deaf_to_peer(info, "none", [], up, elsewhere)
    assert asked == ["172.20.40.100", "172.20.40.12", "172.20.40.21", "172.20.40.22"]
    link[0] = True  # the peer answers on the dedicated link: alive, its LAN cut (ipfail moves the VIP)
    assert not deaf_to_peer(info, "none", [], up, elsewhere)
    link[0], busy[0] = False, True  # heartbeat's resource scripts run: a takeover under way
    assert not deaf_to_peer(info, "none", [], up, elsewhere)
    busy[0] = False
    assert not deaf_to_peer(info, "none", [], False, elsewhere)  # a fresh stack: initdead is its own
    assert not deaf_to_peer(info, "local", [], up, elsewhere)  # it claims them: Vacancy's
    assert deaf_to_peer(info, "transition", [], up, elsewhere)  # sat there, no script running (CI, stop 40)
    busy[0] = True
    assert not deaf_to_peer(info, "transition", [], up, elsewhere)  # taking over now
    busy[0] = False
    assert not deaf_to_peer(info, "none", ["2001:db8:40::100"], up, elsewhere)  # it holds one: Split's
    assert not deaf_to_peer({**info, "vips": ["2001:db8:40::100"]}, "none", [], up, elsewhere)
    assert not deaf_to_peer({**info, "stack": "keepalived"}, "MASTER", [], up, elsewhere)
    assert deaf_to_peer({**info, "stack": "keepalived"}, "BACKUP", [], up, elsewhere)
    for present in ("172.20.40.100", "172.20.40.12"):  # somebody serves, or the peer is there
        answers.add(present)
        assert not deaf_to_peer(info, "none", [], up, elsewhere)
        answers.discard(present)
    answers.clear()  # nobody answers at all: this director's own cable is cut, its stack is right
    assert not deaf_to_peer(info, "none", [], up, elsewhere)
    assert not deaf_to_peer({k: v for k, v in info.items() if k != "witnesses"}, "none", [], up,
                                    lambda a: a == "172.20.40.21")  # an old seed names none: never
    deaf = hawatch.Deaf(13)
    assert not deaf.observe(True, 0) and not deaf.observe(True, 12.9)
    assert deaf.observe(True, 13)
    assert not deaf.observe(True, 26) and not deaf.observe(True, 100)  # once per absence
    assert not deaf.observe(False, 101)  # the peer is back (or somebody serves): a new absence may act
    assert not deaf.observe(True, 102) and deaf.observe(True, 115)


def test_a_restarted_heartbeat_that_heard_every_node_is_past_its_first_verdict_before_initdead():
    """heartbeat counts initdead only until it has heard (or declared dead) every node: a step-out's
    restart that hears its peer and ping node is ready after the watchdog's grace, not 50 s."""
    info = {"stack": "heartbeat", "initdead": 30}
    heard = [False]
    first = hawatch.FirstVerdict()
    assert not first.observe(info, None, lambda: True)  # stopped
    assert not first.observe(info, c.HAWATCH_GRACE - 1, lambda: True)  # the watchdog's grace
    assert not first.observe(info, c.HAWATCH_GRACE + 1, lambda: heard[0])  # the ping node not heard yet
    heard[0] = True
    assert first.observe(info, c.HAWATCH_GRACE + 2, lambda: heard[0])
    heard[0] = False  # given stays given: no more cl_status calls
    assert first.observe(info, c.HAWATCH_GRACE + 3, lambda: pytest.fail("asked again"))
    assert not first.observe(info, 2, lambda: True)  # started again (a restart): from the start
    assert not first.observe(info, 30 + c.HAWATCH_GRACE - 1, lambda: heard[0])
    assert first.observe(info, 30 + c.HAWATCH_GRACE, lambda: heard[0])  # initdead has passed: given anyway
    kept = hawatch.FirstVerdict()  # keepalived: nothing to ask, its initdead (deadtime) + grace
    assert not kept.observe({"stack": "keepalived", "initdead": 3}, c.HAWATCH_GRACE + 2, lambda: True)
    assert kept.observe({"stack": "keepalived", "initdead": 3}, c.HAWATCH_GRACE + 3, lambda: False)


def test_heard_every_node_asks_heartbeat_for_each_node_it_knows():
    statuses = {"lvs-a": "active", "lvs-b": "active", "172.20.40.1": "init"}

    def run(argv, timeout=0):
        if argv == ["cl_status", "listnodes"]:
            return subprocess.CompletedProcess(argv, 0, "\n".join(statuses) + "\n", "")
        return subprocess.CompletedProcess(argv, 0, statuses[argv[-1]] + "\n", "")
    assert not hawatch.heard_every_node(run)  # the ping node not heard yet
    statuses["172.20.40.1"] = "ping"
    assert hawatch.heard_every_node(run)
    statuses["lvs-b"] = "dead"  # declared dead: heartbeat's comm is up too
    assert hawatch.heard_every_node(run)
    assert not hawatch.heard_every_node(lambda argv, timeout=0: None)  # heartbeat does not answer


def test_a_deaf_restart_skips_the_rejoin_wait(monkeypatch):
    """The peer is silent: there is no dead verdict of it to wait for."""
    ran, slept = [], []
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: ran.append(argv))
    monkeypatch.setattr(hawatch, "reset", lambda info, log: None)
    info = {"stack": "heartbeat", "deadtime": 3}
    hawatch.restart("heartbeat.service", info, print, sleep=slept.append, wait=False)
    assert slept == [] and ran[-1] == ["systemctl", "start", "--no-block", "heartbeat.service"]
    hawatch.restart("heartbeat.service", info, print, sleep=slept.append)
    assert slept == [5]


def test_a_takeover_under_way_shows_in_heartbeats_resource_scripts(tmp_path):
    for pid, argv in ((1, b"/sbin/init\0"), (7, b"/bin/sh\0/usr/share/heartbeat/ResourceManager\0takegroup\0lvs-a\0")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(argv)
    assert hawatch.taking_over(tmp_path)
    (tmp_path / "7" / "cmdline").write_bytes(b"/usr/sbin/ldirectord\0")
    assert not hawatch.taking_over(tmp_path)


def test_the_peer_on_the_dedicated_link_is_asked_there_and_only_with_a_link(monkeypatch):
    asked = []
    monkeypatch.setattr(hawatch.arp, "holder", lambda iface, ip: asked.append((iface, ip)) or "52:54:00:00:00:02")
    assert not hawatch.peer_on_link({"interface": "eth0"}) and asked == []
    assert hawatch.peer_on_link({"link_interface": "eth1", "peer_link_address": "10.255.0.2"})
    assert asked == [("eth1", "10.255.0.2")]


def test_only_an_active_peer_counts_as_heard(monkeypatch):
    said = {"lvs-b": "active"}
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: hawatch.subprocess.CompletedProcess(
        argv, 0, said[argv[-1]] + "\n", ""))
    assert hawatch.peer_active({"peer": "lvs-b"})
    for node_status in ("dead", "up", "init"):
        said["lvs-b"] = node_status
        assert not hawatch.peer_active({"peer": "lvs-b"})
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: None)  # cl_status hung
    assert not hawatch.peer_active({"peer": "lvs-b"})


def test_a_hand_over_takes_the_missing_vips_on_the_standby_and_drops_them_all_on_the_old_active(monkeypatch):
    """`appliance take-vips` adds (IPv4 with its broadcast, IPv6 without DAD and deprecated) and
    announces only what is not held yet; `release-vips` drops every VIP and ends its announcer."""
    info = {"interface": "eth0", "vips": ["172.20.40.100", "172.20.40.101", "2001:db8:40::100"],
            "prefixlen": 24, "prefixlen6": 64}
    held = ["172.20.40.101"]
    ran, announced = [], []
    monkeypatch.setattr(hawatch, "held_vips", lambda i: list(held))
    monkeypatch.setattr(hawatch, "run", lambda argv, timeout=0: ran.append(argv))
    monkeypatch.setattr(hawatch, "announce", lambda vips, i, count=0: announced.extend(vips))
    assert hawatch.take_vips(info) == ["172.20.40.100", "2001:db8:40::100"]
    assert ["ip", "addr", "add", "172.20.40.100/24", "dev", "eth0", "brd", "+"] in ran
    assert ["ip", "addr", "add", "2001:db8:40::100/64", "dev", "eth0", "nodad", "preferred_lft", "0"] in ran
    assert not any("172.20.40.101/24" in argv for argv in ran)
    assert announced == ["172.20.40.100", "2001:db8:40::100"]
    assert ran[-1] == [c.SYNC_SCRIPT, "master", "start"]  # the sync master follows the VIPs
    ran.clear()
    held[:] = info["vips"]
    assert hawatch.take_vips(info) == [] and ran == [[c.SYNC_SCRIPT, "master", "start"]]
    ran.clear()
    monkeypatch.setattr(hawatch.c, "SEND_ARP_PIDFILE", "/nonexistent/send_arp-{vip}.pid")
    assert hawatch.release_vips(info) == info["vips"]
    assert ran == [["ip", "addr", "del", f"{v}/{p}", "dev", "eth0"] for v, p in
                   (("172.20.40.100", 24), ("172.20.40.101", 24), ("2001:db8:40::100", 64))] + [
        ["pkill", "-f", f"^{c.SEND_UA} .* (2001:db8:40::100) "]]  # and every announcement ends


def test_take_vips_refuses_on_a_real_server(monkeypatch, capsys):
    from firstboot import appliance
    monkeypatch.setattr(appliance.applied, "node", lambda state: {"role": "realserver", "vips": []})
    assert appliance.main(["take-vips"]) == 1
    assert "not a director" in capsys.readouterr().err
    # keepalived moves its VIPs itself: the hand-over is its track file
    monkeypatch.setattr(appliance.applied, "node", lambda state: {"role": "director", "stack": "keepalived",
                                                                   "vips": ["172.20.40.100"]})
    monkeypatch.setattr(hawatch, "take_vips", lambda info: pytest.fail("VIPs added beside keepalived"))
    assert appliance.main(["take-vips"]) == 1
    assert c.KEEPALIVED_HAND_OVER in capsys.readouterr().err


DEPRECATE_IN_A_NETNS = """
import subprocess
from firstboot import hawatch
subprocess.run("ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up",
               shell=True, check=True)
info = {"interface": "v0", "vips": ["2001:db8:9::9"], "prefixlen6": 64}
def show(a):
    out = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", "v0", "to", a + "/128"],
                         capture_output=True, text=True).stdout.strip()
    return out or "absent"
hawatch.deprecate(info["vips"], info, hawatch.ipv6_vip_flags(info))
print(show("2001:db8:9::9"))
subprocess.run(["ip", "addr", "add", "2001:db8:9::9/64", "dev", "v0", "nodad"], check=True)
hawatch.deprecate(info["vips"], info, hawatch.ipv6_vip_flags(info))
print(show("2001:db8:9::9"))
subprocess.run(["ip", "-6", "addr", "change", "2001:db8:9::8/64", "dev", "v0", "preferred_lft", "0"])
print(show("2001:db8:9::8"))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_deprecating_a_vip_never_adds_it_and_keeps_nodad_in_the_kernel():
    """The real kernel, in a network namespace of its own: `ip addr change` of an address that
    is not there adds it, with DAD (the hole); deprecate() leaves a released VIP released, and
    a held one deprecated without DAD."""
    import subprocess
    import sys
    out = subprocess.run(["unshare", "-n", sys.executable, "-c", DEPRECATE_IN_A_NETNS], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "absent"
    assert "2001:db8:9::9/64" in out[1] and "nodad" in out[1] and "deprecated" in out[1], out[1]
    assert "2001:db8:9::8/64" in out[2] and "nodad" not in out[2], out[2]  # what the old change did
