"""The HA watchdog of a director: a stack that stops answering is restarted, within limits.

Neither heartbeat nor keepalived tells systemd it is alive, and a hung one is worse than a dead
one: keepalived's VRRP process once sat blocked in a netlink read for 16 minutes holding the VIP
beside its peer (docs/split-brain.md); a SIGSTOPped heartbeat keeps its VIP while the peer takes
over. So this asks each stack, every HAWATCH_INTERVAL seconds, in the stack's own terms:

- keepalived: SIGUSR1 to the VRRP process, which must write its state dump (the event loop
  that sends adverts is the one that writes it) within HAWATCH_PROBE_TIMEOUT;
- heartbeat: `cl_status rscstatus` over heartbeat's API socket, within the same time.

Only a probe that gets *no answer in time* is a miss: a refusal (the daemon is between two
instances: heartbeat re-executing itself, keepalived respawning its child) is systemd's and the
daemon's own business. HAWATCH_MISSES misses in a row (never during HAWATCH_GRACE after the unit
started, nor while the unit is stopped on purpose) restart the stack: SIGKILL to its cgroup (a hung process
ignores SIGTERM), `reset` clears the VIP and sync master it left, then a fresh start, with a
journal line saying why. At most HAWATCH_RESTARTS restarts in HAWATCH_WINDOW seconds: past that
it stops the stack and leaves the VIP to the peer rather than loop, and says so.

A stack that answers can still be wrong: both directors holding the VIP for longer than the
profile's duplicate_limit (an ARP probe answered by the peer) makes the one with the lower
address step out the same way (class Duplicate says why), within the same restart budget; both
up and neither holding it: past duplicate_limit the director whose stack claims it puts the VIPs
back, past its vacancy_limit it restarts that stack (class Vacancy); one director holding some
VIPs and the other the rest is healed towards the holder of the first IPv4 VIP (class Split);
a heartbeat stuck in a transition while its peer serves is restarted (class Stuck), and so is a
stack that claims nothing while neither the peer nor a VIP holder answers (class Deaf). A step-out
followed by a healthy spell cured its duplicate (or vacancy) and gives its place back
(Watch.settled).

And the IPVS master sync daemon must run where the VIP is: each stack starts and stops it once
per transition, with a time limit, and a start that failed there was never tried again (a CI run
left the active without one: its connections reached no standby). A mismatch that lasts
HAWATCH_SYNC_AFTER seconds is repaired (class SyncFollower), with a journal line.

What it last found goes to HAWATCH_HEALTH (JSON) for `appliance status` and the lab.

    python3 -m firstboot.hawatch watch     # the loop (appliance-hawatch.service)
    python3 -m firstboot.hawatch probe     # one probe, printed as JSON
    python3 -m firstboot.hawatch reset     # clear what a killed stack left (VIP, sync master)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, ip_address
from pathlib import Path

from builder import contract as c
from firstboot import arp, metrics
from firstboot import state as applied
from firstboot.status import held_vips, sync_threads


@dataclass(frozen=True)
class Probe:
    answering: bool
    hung: bool          # asked, and no answer within the time limit (a refusal is not a hang)
    state: str          # the VRRP state (keepalived), rscstatus (heartbeat), STOPPED, HUNG...
    detail: str = ""


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def run(argv: list[str], timeout: float = c.HAWATCH_PROBE_TIMEOUT) -> subprocess.CompletedProcess | None:
    """A command with a time limit; None when it did not finish in time."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None


_STARTED: dict[Path, int] = {}  # /proc/PID -> its start in clock ticks since boot (never changes)


def unit_active_for(unit: str, cgroups: Path = Path("/sys/fs/cgroup/system.slice"),
                    proc: Path = Path("/proc")) -> float | None:
    """Seconds since `unit` started (its oldest process's start); None when it has no process
    (stopped on purpose, failed). Read from its cgroup and /proc, not `systemctl show`: that
    costs a process and a D-Bus call to PID 1 every second (a tenth of a TCG director's CPU,
    and under load it timed out and read a serving director as stopped). Each process's start
    is read once."""
    try:
        pids = (cgroups / unit / "cgroup.procs").read_text().split()
        uptime = float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError):
        return None
    starts = []
    for pid in pids:
        path = proc / pid
        if (start := _STARTED.get(path)) is None:
            try:  # field 22, after the command in parentheses: start time in clock ticks since boot
                start = _STARTED[path] = int((path / "stat").read_text().rpartition(")")[2].split()[19])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
        starts.append(start)
    if len(_STARTED) > 4096:  # the units' processes come and go: forget the old ones now and then
        _STARTED.clear()
    return uptime - min(starts) / CLOCK_TICKS if starts else None


def vrrp_states(dump: str) -> list[str]:
    """The state of each VRRP instance in keepalived's SIGUSR1 dump."""
    states, in_instance = [], False
    for line in dump.splitlines():
        if line.startswith(" VRRP Instance = "):
            in_instance = True
        elif in_instance and line.strip().startswith("State = "):
            states.append(line.split("=", 1)[1].strip())
            in_instance = False
    return states


def probe_keepalived(timeout: float = c.HAWATCH_PROBE_TIMEOUT, dump: Path = Path(c.KEEPALIVED_STATE_DUMP),
                     pidfile: Path = Path(c.KEEPALIVED_VRRP_PID)) -> Probe:
    """SIGUSR1 to the VRRP process; it answers by writing its state dump."""
    try:
        pid = int(pidfile.read_text())
        before = dump.stat().st_mtime_ns if dump.exists() else 0
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError) as e:
        return Probe(False, False, "ABSENT", f"no VRRP process to ask ({e})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            if dump.stat().st_mtime_ns != before:
                time.sleep(0.1)  # written with one fopen/fclose: let it finish
                states = vrrp_states(dump.read_text(errors="replace"))
                if states:
                    return Probe(True, False, "/".join(dict.fromkeys(states)), f"VRRP process {pid}")
        except OSError:
            pass
    return Probe(False, True, "HUNG", f"VRRP process {pid} wrote no state dump within {timeout:.0f} s of SIGUSR1")


def probe_heartbeat(timeout: float = c.HAWATCH_PROBE_TIMEOUT) -> Probe:
    """heartbeat's own status interface: its API socket answers cl_status. One call a probe:
    rscstatus signs on as hbstatus does (and fails as it does when heartbeat is down). Each
    call is a fork and an API client registration in heartbeat's main loop, which under TCG
    took up to 50 ms ("Dispatch function for client registration took too long")."""
    rsc = run(["cl_status", "rscstatus"], timeout)
    if rsc is None:
        return Probe(False, True, "HUNG", f"cl_status rscstatus got no answer within {timeout:.0f} s")
    if rsc.returncode != 0 or not rsc.stdout.strip():
        return Probe(False, False, "ABSENT", (rsc.stdout + rsc.stderr).strip() or f"cl_status exit {rsc.returncode}")
    return Probe(True, False, rsc.stdout.strip(), "heartbeat API: rscstatus")


def heard_every_node(runner: Callable = run) -> bool:
    """heartbeat has heard every node it knows (the peer, each ping node) or declared it dead:
    from then on it judges a silence by deadtime, not initdead (heartbeat.c, check_comm_isup and
    check_for_timeouts). A node not heard yet still says "init"."""
    nodes = runner(["cl_status", "listnodes"])
    names = nodes.stdout.split() if nodes and nodes.returncode == 0 else []
    return bool(names) and all(metrics.node_status(runner, n) not in (None, "init") for n in names)


@dataclass
class FirstVerdict:
    """Whether the stack has run past its first verdict on the peer. Before it a fault is not one
    the stack can answer yet (a fresh heartbeat waits initdead for a silent peer): the deaf check
    waits, and the lab injects none (lab Cluster.ready_for_fault reads it from the health JSON).
    Past the watchdog's grace, a heartbeat that has heard every node has given it (a step-out's
    restart: ~20 s, not initdead + grace, 50 s on dual-stack.toml); any stack after initdead +
    grace. Given stays given until the unit starts again."""
    given: bool = False
    last_up: float | None = None

    def observe(self, info: dict, up: float | None, heard_all: Callable[[], bool]) -> bool:
        if up is None or (self.last_up is not None and up < self.last_up):
            self.given = False
        self.last_up = up
        if not self.given and up is not None and up >= c.HAWATCH_GRACE:
            self.given = (up >= info.get("initdead", 0) + c.HAWATCH_GRACE
                          or (info["stack"] == "heartbeat" and heard_all()))
        return self.given


def peer_active(info: dict) -> bool:
    """heartbeat hears the peer: `cl_status nodestatus PEER` says "active" (a ping node is "up")."""
    return metrics.node_status(run, info["peer"]) == "active"


STACKS: dict[str, tuple[str, Callable[[], Probe]]] = {
    "keepalived": (c.KEEPALIVED_UNIT, probe_keepalived),
    "heartbeat": ("heartbeat.service", probe_heartbeat),
}


@dataclass
class Watch:
    """The decision, apart from the probing and the restarting (unit tested with a clock)."""
    misses: int = 0
    restarts: list[float] = field(default_factory=list)   # when each restart happened
    step_outs: list[float] = field(default_factory=list)  # those of them that were step-outs
    gave_up: bool = False
    healthy_since: float | None = None

    def observe(self, probe: Probe, now: float) -> str:
        """What to do after a probe: "ok", "wait" (a miss, not yet enough), "restart" or
        "give-up" (the restart budget is spent: stop the stack, leave the VIP to the peer)."""
        if not probe.hung:
            self.misses = 0
            return "ok" if probe.answering else "wait"
        self.misses += 1
        if self.misses < c.HAWATCH_MISSES:
            return "wait"
        self.misses = 0
        return self.restart_or_give_up(now)

    def restart_or_give_up(self, now: float) -> str:
        """One more restart if the budget allows it, else "give-up"."""
        self.restarts = [t for t in self.restarts if now - t < c.HAWATCH_WINDOW]
        self.healthy_since = None  # a healthy spell starts after the restart, not before
        if not self.budget_left(now):
            self.gave_up = True
            return "give-up"
        self.restarts.append(now)
        return "restart"

    def budget_left(self, now: float) -> bool:
        """A restart now would not spend the budget's last place on a give-up."""
        return sum(now - t < c.HAWATCH_WINDOW for t in self.restarts) < c.HAWATCH_RESTARTS

    def step_out(self, now: float) -> str:
        """A restart for a duplicate VIP (class Duplicate), from the same budget."""
        verdict = self.restart_or_give_up(now)
        if verdict == "restart":
            self.step_outs.append(now)
        return verdict

    def settled(self, healthy: bool, now: float, heard: bool = False) -> bool:
        """A step-out that ended the duplicate is a cure, not a loop: once the stack has answered
        with no second holder for HAWATCH_CURED s, or at once if, restarted, it hears the peer
        again (`heard`: heartbeat's nodestatus "active", which a cause that persists, frames
        filtered between them, never gives), the step-outs before it give their places in the
        budget back (True when they did). A burst of split brains, each healed, then never
        ends in a give-up, even at a dual master a minute (bench, session 29: the fourth came
        27 s after a restart and the seventh stopped the stack for good); a cause that
        persists leaves no healthy spell, and its step-outs add up as before. Restarts after a
        hang keep their places: a daemon that hangs again was not cured."""
        if not healthy:
            self.healthy_since = None
            return False
        if self.healthy_since is None:
            self.healthy_since = now
        if not self.step_outs or (now - self.healthy_since < c.HAWATCH_CURED and not heard):
            return False
        cured = set(self.step_outs)
        self.restarts, self.step_outs = [t for t in self.restarts if t not in cured], []
        return True


@dataclass
class Duplicate:
    """Two directors holding the VIP, as the LAN sees it (an ARP probe answered by the peer while
    this one holds it), whatever their stacks believe. heartbeat logs "Both machines own our
    resources!" and does nothing more (a resumed active beside the peer that took over stays so
    for good: docs/split-brain.md); a VRRP pair whose adverts are lost while ARP passes does the
    same. Past `limit` seconds the director with the lower address steps out (restarted as after
    a hang, so it rejoins as standby; VRRP's rule too: the higher address wins a tie), and the
    keeper announces itself the moment the duplicate ends, so no neighbour keeps the MAC of the
    one that gave way."""
    limit: float
    steps_out: bool
    since: float | None = None

    def observe(self, held: bool, other: str | None, now: float) -> str:
        """"ok", "wait" (a duplicate, not yet for long), "step-out" or "announce"."""
        if not held or other is None:
            was, self.since = self.since is not None, None
            return "announce" if was and held and not self.steps_out else "ok"
        if self.since is None:
            self.since = now
        if now - self.since < self.limit or not self.steps_out:
            return "wait"
        self.since = None
        return "step-out"


@dataclass
class Vacancy:
    """Both directors up and neither holding the VIP: heartbeat v1 watches none of its resources
    (an address deleted from the active, or flushed by an `ifdown`, stays deleted) and,
    restarted at the wrong moment, has handed the resources to nobody; a VRRP master can lose
    its address the same way. Nothing in either stack ends that. Past `mend_after` seconds the
    director whose stack claims the VIP puts the VIPs back itself, as its stack's start would
    (when both claim them, the higher address first, the lower after twice that). Past `limit`
    seconds, if that did not hold, the claimant restarts its stack, so that its peer takes over
    as after a crash; when neither claims it, the one with the higher address restarts after
    twice that (a claimant, if there is one, goes first)."""
    limit: float
    higher: bool
    mend_after: float = 0.0   # 0: never mend, only restart
    since: float | None = None
    mended: bool = False

    @property
    def mend_due(self) -> float:
        """Seconds of vacancy before this director mends it: the higher address first."""
        return self.mend_after * (1 if self.higher else 2)

    def observe(self, vacant: bool, claims: bool, now: float) -> str:
        """"ok", "wait", "mend" (once a vacancy) or "restart"."""
        if not vacant:
            self.since, self.mended = None, False
            return "ok"
        if self.since is None:
            self.since = now
        if claims and self.mend_after and not self.mended and now - self.since >= self.mend_due:
            self.mended = True
            return "mend"
        due = self.limit if claims else 2 * self.limit if self.higher else None
        if due is None or now - self.since < due:
            return "wait"
        self.since, self.mended = None, False
        return "restart"


def claims_vip(stack: str, state: str) -> bool:
    """The stack believes this director is the one to hold the VIP: heartbeat holds a resource
    group (rscstatus local, foreign or all), a VRRP instance is MASTER."""
    return "MASTER" in state if stack == "keepalived" else state in ("local", "foreign", "all")


def anchor_vip(info: dict) -> str | None:
    """The VIP that says which director holds them all: the first IPv4 one (ARP can ask for it)."""
    return next((v for v in info.get("vips", []) if not c.is_ipv6(v)), None)


def prefixlen(info: dict, vip: str) -> int:
    """The prefix length a VIP takes on the cluster NIC: the LAN's, IPv4 or IPv6."""
    return (info.get("prefixlen6") or 64) if c.is_ipv6(vip) else info["prefixlen"]


def vacant(info: dict, peer_answers: Callable[[], bool], claims: bool = False,
           lan_answers: Callable[[], bool] = lambda: False) -> bool:
    """Nobody on the LAN answers ARP for the first IPv4 VIP while the peer answers for its own
    address, or, when this director's stack claims the VIPs, while a real server answers (bench,
    session 29: a fresh heartbeat's dead verdict on its paused peer ran no resource script, yet
    rscstatus said "all", and nothing added the VIPs for 67 s). A peer down or cut off is
    otherwise the stack's business (class Deaf if it never gives its verdict). Asked only while
    this director holds no VIP; a profile of IPv6 VIPs alone is never found vacant."""
    vip = anchor_vip(info)
    if vip is None or not info.get("vacancy_limit"):
        return False
    try:
        if arp.other_holder(info["interface"], vip) is not None:
            return False
    except OSError:  # the NIC is down: a cut cable, the stack's business
        return False
    return peer_answers() or (claims and lan_answers())


@dataclass
class Lasting:
    """A condition's clock: `lasted` is true once the condition has held `limit` s without a
    break; the clock then starts again."""
    limit: float
    since: float | None = None

    def lasted(self, on: bool, now: float) -> bool:
        if not on:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        if now - self.since < self.limit:
            return False
        self.since = None
        return True


@dataclass
class Stuck(Lasting):
    """heartbeat 3.0.6 can sit in rscstatus "transition" for good: a fresh heartbeat whose peer
    restarted during its takeover logs `T_STARTING received during takeover` and never finishes
    it (CI, sessions 24 and 25: for the rest of the run). It answers every probe, claims nothing
    and holds nothing, so no other check moves it, and as the standby it would never take over.
    Once it has sat there `limit` s (a takeover's own time limit) holding no VIP while another
    host answers for them, it is restarted: the peer serves meanwhile, nothing is lost."""


def stuck_in_transition(info: dict, state: str, held: list[str],
                        anchor_elsewhere: Callable[[str], bool]) -> bool:
    """heartbeat in transition, this director holding no VIP, the first IPv4 VIP served elsewhere."""
    anchor = anchor_vip(info)
    return (info["stack"] == "heartbeat" and state == "transition" and not held
            and anchor is not None and anchor_elsewhere(anchor))


@dataclass
class Deaf(Lasting):
    """A stack that claims nothing while nobody on the LAN serves the VIP and the peer has gone
    from it: its verdict on the peer is overdue. A heartbeat restarted by a step-out 66 s before
    stayed deaf to its peer's 73-s pause (bench, session 28: it logged the late heartbeat on the
    resume, never a dead verdict), so no director held the VIP, and the vacancy check, which
    needs the peer on the LAN, did not cover it. Once that has lasted `limit` s (a verdict and a
    margin), on a stack up longer than a fresh one's first verdict, it is restarted, once per
    absence and without the rejoin wait: a silent peer gives no verdict to wait for. A fresh
    stack that hears nobody takes the VIPs after its initdead. A real server must answer
    meanwhile: a director whose own cable is cut hears nobody, and its stack is right to wait.
    A heartbeat in rscstatus "transition" with none of its resource scripts running counts too:
    one started afresh after a step-out, its peer crashed, sat there holding nothing for the
    last 8 minutes of a CI run (stop 40), which class Stuck, needing a serving peer, never saw."""
    done: bool = False

    def observe(self, deaf: bool, now: float) -> bool:
        """True once an absence has lasted `limit` s, then not again until it ends."""
        if not deaf:
            self.done = False
        if not self.lasted(deaf, now) or self.done:
            return False
        self.done = True
        return True


def deaf_to_peer(info: dict, state: str, held: list[str], verdict: bool,
                 answered_elsewhere: Callable[[str], bool], on_link: Callable[[], bool],
                 busy: Callable[[], bool]) -> bool:
    """This director holds no VIP and its stack claims none, it has run past its first verdict
    (`verdict`: FirstVerdict) and runs no takeover (`busy`: heartbeat's resource scripts), and on the LAN
    nobody answers for the first IPv4 VIP, the peer does not answer for its own address, and a
    real server does. A peer still heard on the dedicated link (`on_link`) is alive with its LAN
    cut: ipfail's business, which a restart here would disturb."""
    anchor = anchor_vip(info)
    if anchor is None or held or claims_vip(info["stack"], state) or not verdict:
        return False
    if answered_elsewhere(anchor) or answered_elsewhere(info["peer_address"]):
        return False
    return lan_answers(info, answered_elsewhere) and not on_link() and not busy()


def lan_answers(info: dict, answered_elsewhere: Callable[[str], bool]) -> bool:
    """A real server answers ARP: this director's own LAN cable works."""
    return any(answered_elsewhere(w) for w in info.get("witnesses", []))


def peer_on_link(info: dict) -> bool:
    """The peer answers ARP for its address on the dedicated link (False without a link)."""
    return bool(info.get("peer_link_address")) and arp.holder(info["link_interface"],
                                                              info["peer_link_address"]) is not None


def taking_over(proc: Path = Path("/proc")) -> bool:
    """heartbeat runs a takeover's resource scripts (mach_down, ResourceManager, resource.d):
    under TCG they take tens of seconds, with rscstatus not yet claiming."""
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes()
        except OSError:
            continue
        if any(mark in text for mark in (b"/usr/share/heartbeat/", b"/resource.d/")):
            return True
    return False


@dataclass
class Split(Lasting):
    """Every VIP moves with the one stack (heartbeat's one resource group, keepalived's one
    instance): a director holds all of them or none. A CI run (stop 35) ended with the IPv4 VIP
    on one director and the IPv6 one on the other, both heartbeats saying "local" after both had
    restarted (the IPv6 VIP re-added on one, refused by duplicate address detection on the
    other): no VIP held twice, none vacant, so neither check saw it, and no stack ever mends it.
    The first IPv4 VIP decides: once a split has lasted `limit` s, its holder (while its stack
    claims the VIPs, or heartbeat sits in transition: completes_split) adds those it lacks, and a
    director without it drops those it holds while another host answers for it."""

    def observe(self, wrong: tuple[str, list[str]] | None, now: float) -> tuple[str, list[str]] | None:
        """`wrong` is ("complete", the VIPs to add) or ("drop", the VIPs to give up) or None;
        the same comes back once it has lasted `limit` s."""
        return wrong if self.lasted(wrong is not None, now) else None


def completes_split(stack: str, state: str) -> bool:
    """The anchor's holder adds the VIPs it lacks while its stack claims them, or while heartbeat
    sits in rscstatus "transition": a heartbeat restarted by a step-out sat there 250 s holding the
    IPv4 VIP vip-takeover had added, the others dropped by its peer's split check, and nothing
    completed the set (suite, session 30). A takeover that is under way adds the same VIPs."""
    return claims_vip(stack, state) or (stack == "heartbeat" and state == "transition")


def split_of(info: dict, held: list[str], claims: bool,
             anchor_elsewhere: Callable[[str], bool]) -> tuple[str, list[str]] | None:
    """What is wrong with this director's share of the VIPs, if it holds only part of them."""
    anchor = anchor_vip(info)
    if anchor is None or not held:
        return None
    if anchor in held:
        missing = [v for v in info["vips"] if v not in held]
        return ("complete", missing) if missing and claims else None
    return ("drop", list(held)) if anchor_elsewhere(anchor) else None


def add_vips(vips: list[str], info: dict) -> None:
    """Add VIPs as vip-takeover does (IPv6 without duplicate address detection, deprecated; a
    copy that failed it is replaced) and announce them."""
    iface = info["interface"]
    for vip in vips:
        plen = prefixlen(info, vip)
        if c.is_ipv6(vip):
            run(["ip", "addr", "del", f"{vip}/{plen}", "dev", iface], timeout=5)
        run(["ip", "addr", "add", f"{vip}/{plen}", "dev", iface]
            + (["nodad", "preferred_lft", "0"] if c.is_ipv6(vip) else ["brd", "+"]), timeout=5)
    announce(vips, info)


def mend_split(fix: tuple[str, list[str]], info: dict, held: list[str], limit: float,
               log: Callable[[str], None]) -> None:
    """Add the missing VIPs, or drop the strays."""
    what, vips = fix
    if what == "complete":
        add_vips(vips, info)
    else:
        for vip in vips:
            run(["ip", "addr", "del", f"{vip}/{prefixlen(info, vip)}", "dev", info["interface"]], timeout=5)
    log(f"{c.HAWATCH_SPLIT} for {limit:.0f} s: this director held {', '.join(held)}; "
        + (f"added {', '.join(vips)} and announced them" if what == "complete" else
           f"another host answers for {anchor_vip(info)}: dropped {', '.join(vips)}"))


@dataclass
class SyncFollower:
    """The master sync daemon follows the VIP. Only a mismatch that outlasts `after` seconds is
    repaired: during a transition the stack itself is about to start or stop it."""
    after: float = c.HAWATCH_SYNC_AFTER
    since: float | None = None

    def observe(self, held: bool, running: bool, now: float) -> str:
        """"ok", "wait", "start" or "stop"."""
        if held == running:
            self.since = None
            return "ok"
        if self.since is None:
            self.since = now
        if now - self.since < self.after:
            return "wait"
        self.since = None
        return "start" if held else "stop"


@dataclass
class Announcer:
    """A new holder's stack announces its VIPs with the takeover: once (heartbeat), again 5 s
    later (keepalived). A switch or client that missed that sends to the old director until the
    next. So, on either stack, a VIP newly held starts a run of `early` announcements of every
    held VIP (ANNOUNCE_INTERVAL_MS apart: a client that missed the takeover's waits half a
    second, not minutes), then ANNOUNCE_REPEAT every `every` s while they are held; a VIP let go
    has its run stopped (an announcement of a VIP held elsewhere would pull its clients here)."""
    early: int = c.ANNOUNCE_EARLY
    every: float = c.ANNOUNCE_REFRESH
    last: float | None = None    # the last run started
    held: frozenset[str] = frozenset()

    def observe(self, held: list[str], now: float) -> tuple[int, list[str]]:
        """(how many announcements of `held` to start now, 0 for none; the VIPs no longer held)."""
        gone, new = sorted(self.held - set(held)), set(held) - self.held
        self.held = frozenset(held)
        if not held:
            self.last = None
            return 0, gone
        if new or self.last is None:
            self.last = now
            return self.early, gone
        if now - self.last >= self.every:
            self.last = now
            return c.ANNOUNCE_REPEAT, gone
        return 0, gone


def ipv6_vip_flags(info: dict, table: Path = Path(c.IF_INET6)) -> dict[str, int]:
    """The IPv6 VIPs on the cluster NIC, as the kernel has them (VIP -> ifa_flags), read from
    /proc/net/if_inet6: no `ip` process, asked every second."""
    wanted = {ip_address(v).exploded.replace(":", ""): v for v in info.get("vips", []) if c.is_ipv6(v)}
    try:
        lines = table.read_text().splitlines() if wanted else []
    except OSError:
        return {}
    return {wanted[f[0]]: int(f[4], 16) for f in (line.split() for line in lines)
            if len(f) == 6 and f[5] == info["interface"] and f[0] in wanted}


@dataclass
class Deprecator:
    """An IPv6 VIP must never be the director's source address: its checks of IPv6 real
    servers would leave from the VIP, and each real server answers an address it holds on lo
    itself. vip-takeover and keepalived (`preferred_lft 0`) add IPv6 VIPs deprecated; heartbeat's
    IPv6addr adds them preferred, so a VIP this director newly holds is deprecated here, once
    per holding (within HAWATCH_INTERVAL of the takeover), or again once its DAD is over."""
    done: set[str] = field(default_factory=set)

    def due(self, held: list[str]) -> list[str]:
        now = {v for v in held if c.is_ipv6(v)}
        new = sorted(now - self.done)
        self.done = now
        return new

    def retry(self, vips: list[str]) -> None:
        self.done -= set(vips)


def deprecate(vips: list[str], info: dict, flags: dict[str, int]) -> list[str]:
    """Deprecate each VIP that is there, usable and still preferred (`flags`: ipv6_vip_flags);
    returns those still in duplicate address detection, to ask again. Never another: `ip addr
    change` of an address that is gone adds it (the kernel's RTM_NEWADDR creates what it does
    not find), and without `nodad` it clears the flag. A VIP keepalived had just released came
    back that way, failed DAD against the new holder and stayed on the backup, dadfailed."""
    later = []
    for vip in vips:
        f = flags.get(vip)
        if f is None or f & (c.IFA_F_DEPRECATED | c.IFA_F_DADFAILED):
            continue
        if f & c.IFA_F_TENTATIVE:
            later.append(vip)
            continue
        run(["ip", "-6", "addr", "change", f"{vip}/{prefixlen(info, vip)}", "dev", info["interface"],
             "nodad", "preferred_lft", "0"], timeout=5)
    return later


def drop_dadfailed(info: dict, flags: dict[str, int], log: Callable[[str], None]) -> list[str]:
    """An IPv6 VIP whose duplicate address detection failed (added while another host answered
    for it) serves nothing, and stays: the stack's next add of it finds it there (EEXIST) and
    the VIP stays dead on the next takeover. Removed, with a journal line; the VIPs removed."""
    dead = sorted(v for v, f in flags.items() if f & c.IFA_F_DADFAILED)
    for vip in dead:
        run(["ip", "addr", "del", f"{vip}/{prefixlen(info, vip)}", "dev", info["interface"]], timeout=5)
        log(f"{vip} on {info['interface']} {c.HAWATCH_DADFAILED} (another host answered for it): removed")
    return dead


def announce(held: list[str], info: dict, count: int = c.ANNOUNCE_REPEAT) -> None:
    """`count` gratuitous ARPs for each IPv4 VIP, unsolicited NAs for each IPv6 one,
    ANNOUNCE_INTERVAL_MS apart, in the background (one run per VIP: a new one replaces the last)."""
    stop_announcing(held)
    for vip in held:
        argv = c.announce_argv(vip, prefixlen(info, vip), info["interface"], count)
        try:
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            pass


def announce_takeover(info: dict) -> list[str]:
    """The early run for the VIPs held now (`appliance announce`, an operator's). keepalived's
    MASTER event starts the same runs from vrrp-state, without Python (contract.KEEPALIVED_ANNOUNCE).
    The VIPs announced."""
    held = held_vips(info)
    if held:
        announce(held, info, Announcer.early)
    return held


def stop_announcing(vips: list[str]) -> None:
    """End the announcements of these VIPs, whoever started them (VIPaddr, vip-takeover, announce):
    send_arp by its PID file, send_ua (which keeps none) by one pkill for all the IPv6 VIPs, not a
    process each inside the watchdog's loop."""
    if six := [v for v in vips if c.is_ipv6(v)]:
        run(["pkill", "-f", f"^{c.SEND_UA} .* ({'|'.join(six)}) "], timeout=5)
    for vip in (v for v in vips if not c.is_ipv6(v)):
        pidfile = Path(c.SEND_ARP_PIDFILE.format(vip=vip))
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        pidfile.unlink(missing_ok=True)


def follow_sync(sync: SyncFollower, held: list[str], log: Callable[[str], None]) -> None:
    action = sync.observe(bool(held), "master" in sync_threads(), time.monotonic())
    if action in ("start", "stop"):
        done = run([c.SYNC_SCRIPT, "master", action], timeout=15)
        ok = done is not None and done.returncode == 0
        log(f"{c.HAWATCH_SYNC_REPAIRED}: " + (
            f"this director holds {', '.join(held)} but ran no master sync daemon for "
            f"{sync.after:.0f} s: started it" if action == "start" else
            f"a master sync daemon ran for {sync.after:.0f} s without the VIP here: stopped it")
            + ("" if ok else f" (failed: {(done.stderr.strip() if done else 'no answer')})"))


def take_vips(info: dict) -> list[str]:
    """A graceful hand-over's first half, on the standby (`appliance take-vips`, run by `builder
    upgrade` before the active's hb_standby): every VIP not held yet, added and announced, so
    clients move before the active lets go. heartbeat's release and takeover are seconds of
    shell each under TCG (a dual-stack suite: 6.5 s to release, 19 s to acquire the IPv6 VIP),
    and requests in between failed; with both holding for a moment, either director serves
    (both balance: the standby's IPVS table is loaded and synced). heartbeat's acquisition then
    finds the VIPs running. The master sync daemon follows the VIPs, as the stack's start would
    (idempotent). The VIPs added, in order."""
    missing = [v for v in info.get("vips", []) if v not in held_vips(info)]
    add_vips(missing, info)
    run([c.SYNC_SCRIPT, "master", "start"], timeout=15)
    return missing


def release_vips(info: dict) -> list[str]:
    """The VIPs off the cluster NIC and their ARP announcers stopped (`appliance release-vips`:
    the hand-over's second half on the old active, whose stack's own release follows and finds
    nothing left to do; and reset()). The VIPs this director held."""
    held = held_vips(info)
    for vip in info.get("vips", []):  # each: an IPv6 copy that failed DAD is not "held" but is on the NIC
        run(["ip", "addr", "del", f"{vip}/{prefixlen(info, vip)}", "dev", info["interface"]])
    stop_announcing(info.get("vips", []))
    return held


def reset(info: dict | None = None, log: Callable[[str], None] = print) -> None:
    """Clear what a killed stack left behind, as a reboot would: the VIPs on the cluster NIC, the
    ARP announcer, the master sync daemon (bounded: LVSSyncDaemonSwap), stale state files."""
    info = info or applied.node()
    iface = info["interface"]
    release_vips(info)
    run([c.SYNC_SCRIPT, "master", "stop"], timeout=15)
    for stale in (Path(c.KEEPALIVED_STATE), *Path("/run/heartbeat/rsctmp").glob("*")):
        stale.unlink(missing_ok=True)
    log(f"cleared {', '.join(info.get('vips', []))} from {iface} and stopped the sync master")


def rejoin_wait(info: dict) -> float:
    """Seconds to stay silent between the kill and the fresh start. heartbeat: until the peer
    has given its dead verdict (deadtime and a margin), so that it takes over as after a crash
    and sees a reboot after it; back sooner, the pair negotiated the killed node's resources to
    nobody (no VIP holder at all, seen in the suite on the howto's 30 s deadtime). VRRP has no
    membership: keepalived starts as BACKUP at once."""
    return info.get("deadtime", 0) + 2 if info["stack"] == "heartbeat" else 0.0


def restart(unit: str, info: dict, log: Callable[[str], None], start: bool = True,
            sleep: Callable[[float], None] = time.sleep, wait: bool = True) -> None:
    """Kill the hung stack, give up what it held (the VIP first: its peer has taken over, or is
    about to), then start it afresh, as a reboot would."""
    run(["systemctl", "kill", "--signal=KILL", unit], timeout=30)
    reset(info, log)
    for argv in (["systemctl", "stop", unit], ["systemctl", "reset-failed", unit]):
        run(argv, timeout=30)
    if start:
        silence = rejoin_wait(info) if wait else 0
        if silence:
            log(f"{unit} starts again in {silence:.0f} s, once its peer has declared this director dead")
            sleep(silence)
        run(["systemctl", "start", "--no-block", unit], timeout=30)


def duplicate_of(info: dict) -> tuple[list[str], str | None]:
    """(the VIPs this director holds, the MAC of another host answering for the first IPv4 VIP
    while this director holds it too, or None). Every VIP moves with the one stack, so two
    holders of the VIPs both hold that one; a second IPv4 VIP answered elsewhere alone is a split
    (class Split), not a second master: a CI run (session 24) stepped the standby out over one
    instead of dropping its strays. A profile of IPv6 VIPs alone has no such probe."""
    held, anchor = held_vips(info), anchor_vip(info)
    return held, (holder_of(info, anchor) if anchor in held else None)


def holder_of(info: dict, address: str) -> str | None:
    """The MAC of another host answering ARP for `address` on the cluster NIC; None when nobody
    does or the NIC is down (a cut cable: nobody is heard; the watch goes on)."""
    return arp.holder(info["interface"], address)


def write_file(path: Path, text: str) -> None:
    """Whole or not at all: readers (appliance status, node_exporter) never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def write_health(health: dict) -> None:
    write_file(Path(c.HAWATCH_HEALTH), json.dumps(health) + "\n")


def check_duplicate(dup: Duplicate, w: Watch, unit: str, info: dict,
                    log: Callable[[str], None]) -> tuple[list[str], str | None]:
    """Probe for a second VIP holder and act on it: (the VIPs held, the other holder's MAC or None)."""
    held, other = duplicate_of(info)
    now = time.monotonic()
    started = dup.since
    action = dup.observe(bool(held), other, now)
    if action == "wait" and started is None:
        log(f"{other} answers for the VIP too: both directors hold it"
            + (f"; this one steps out in {dup.limit:.0f} s" if dup.steps_out else
               f"; the peer ({info['peer_address']}, the lower address) steps out in {dup.limit:.0f} s"))
    elif action == "announce":
        for vip in held:
            if c.is_ipv6(vip):
                announce([vip], info)  # unsolicited neighbour advertisements (send_ua)
            else:
                arp.announce(info["interface"], vip)
        log(f"the peer gave the VIP up: announced {', '.join(held)} with gratuitous ARP and neighbour advertisements")
    elif action == "step-out":
        step_out(w, unit, info, log, f"both directors held the VIP for {dup.limit:.0f} s and {info['address']} "
                 f"is the lower address: ", f"{c.HAWATCH_STEPPED_OUT}, {c.HAWATCH_RESTARTED} {unit}")
        return [], other
    return held, other


def step_out(w: Watch, unit: str, info: dict, log: Callable[[str], None], why: str, doing: str,
             wait: bool = True) -> None:
    """A restart the LAN asked for (a duplicate, a vacancy), from the restart budget: `why`, then
    `doing` with the restart's place in the budget, or the give-up once the budget is spent.
    `wait`: stay silent until the peer has declared this director dead (class Deaf: no peer)."""
    verdict = w.step_out(time.monotonic())
    log(why + (f"{doing} (restart {len(w.restarts)} of {c.HAWATCH_RESTARTS} in {c.HAWATCH_WINDOW:.0f} s)"
               if verdict == "restart" else
               f"{c.HAWATCH_GAVE_UP} ({unit}) for good after {c.HAWATCH_RESTARTS} restarts "
               f"in {c.HAWATCH_WINDOW:.0f} s; `systemctl restart {c.HAWATCH_UNIT}` tries again"))
    restart(unit, info, log, start=verdict == "restart", wait=wait)


def check_vacancy(vacancy: Vacancy, w: Watch, unit: str, info: dict, state: str, empty: bool,
                  log: Callable[[str], None]) -> None:
    """Act on a VIP nobody holds (class Vacancy), from the same restart budget as a step-out."""
    started, claims = vacancy.since, claims_vip(info["stack"], state)
    action = vacancy.observe(empty, claims, time.monotonic())
    if action == "wait" and started is None:
        log(f"{c.HAWATCH_VACANT} while the LAN answers (this one: {state}); "
            + (f"putting the VIPs back in {vacancy.mend_due:.0f} s, restarting "
               f"{unit} in {vacancy.limit:.0f} s unless one takes it" if claims else
               f"the one whose stack claims it restarts in {vacancy.limit:.0f} s"
               + (f", else this one in {2 * vacancy.limit:.0f} s" if vacancy.higher else "")))
    elif action == "mend":
        add_vips(list(info["vips"]), info)
        log(f"{c.HAWATCH_VACANT} for {vacancy.mend_due:.0f} s and this director's stack claims it ({state}): "
            f"{c.HAWATCH_VACANCY_MENDED}: {', '.join(info['vips'])}, announced; "
            f"{unit} restarts in {vacancy.limit:.0f} s if that does not hold")
    elif action == "restart":
        step_out(w, unit, info, log, f"{c.HAWATCH_VACANT} for {vacancy.limit * (1 if claims else 2):.0f} s and "
                 + ("this director's stack claims it: " if claims else "neither stack claims it: "),
                 f"{c.HAWATCH_RESTARTED} {unit} so that its peer takes over")


def watch(log: Callable[[str], None]) -> int:
    info = applied.node()
    unit, probe_fn = STACKS[info["stack"]]
    w = Watch()
    steps_out = IPv4Address(info["address"]) < IPv4Address(info["peer_address"])
    dup, sync, announcer = Duplicate(info["duplicate_limit"], steps_out), SyncFollower(), Announcer()
    deprecator = Deprecator()
    vacancy = Vacancy(info.get("vacancy_limit") or 0, not steps_out, mend_after=info["duplicate_limit"])
    split = Split(info["duplicate_limit"])
    stuck = Stuck(info.get("vacancy_limit") or 0)
    deaf = Deaf(info["duplicate_limit"])
    first = FirstVerdict()

    def answered_elsewhere(address: str) -> bool:
        return holder_of(info, address) is not None

    def peer_answers() -> bool:
        return answered_elsewhere(info["peer_address"])

    def lan_works() -> bool:
        return lan_answers(info, answered_elsewhere)
    # the peer's last sign of life for `appliance status`; with [metrics] on, the .prom file too
    gauges = metrics.Collector(info, run, peer_answers, late_heartbeats=bool(info.get("metrics")))
    log(f"watching {unit}: {c.HAWATCH_MISSES} missed probes of {c.HAWATCH_PROBE_TIMEOUT:.0f} s restart it, "
        f"at most {c.HAWATCH_RESTARTS} times in {c.HAWATCH_WINDOW:.0f} s")
    while True:
        up, confirm, other, held = unit_active_for(unit), False, None, None
        verdict = first.observe(info, up, heard_every_node)
        if w.gave_up:
            probe = Probe(False, False, "GAVE-UP", f"{unit} restarted {c.HAWATCH_RESTARTS} times in "
                          f"{c.HAWATCH_WINDOW:.0f} s and still hung: stopped, the peer serves")
        elif up is None:
            probe, w.misses = Probe(False, False, "STOPPED", f"{unit} is not active"), 0
        elif up < c.HAWATCH_GRACE:
            probe = Probe(True, False, "STARTING", f"{unit} started {up:.0f} s ago")
        else:
            probe = probe_fn()
            action = w.observe(probe, time.monotonic())
            if action == "restart":
                log(f"{unit} did not answer {c.HAWATCH_MISSES} probes in a row ({probe.detail}): "
                    f"{c.HAWATCH_RESTARTED} it (restart {len(w.restarts)} of {c.HAWATCH_RESTARTS} "
                    f"in {c.HAWATCH_WINDOW:.0f} s)")
                restart(unit, info, log)
            elif action == "wait" and probe.hung:
                confirm = True  # ask again at once: the second probe only confirms the hang
            elif action == "give-up":
                log(f"{unit} still does not answer ({probe.detail}) after {c.HAWATCH_RESTARTS} restarts "
                    f"in {c.HAWATCH_WINDOW:.0f} s: {c.HAWATCH_GAVE_UP} and releasing the VIP to the peer; "
                    f"`systemctl restart {c.HAWATCH_UNIT}` tries again")
                restart(unit, info, log, start=False)
            elif probe.answering:
                held, other = check_duplicate(dup, w, unit, info, log)
                # observed while held too: a vacancy that ended must not count on from where it was
                empty = not held and other is None and vacant(
                    info, peer_answers, claims_vip(info["stack"], probe.state), lan_works)
                check_vacancy(vacancy, w, unit, info, probe.state, empty, log)
                wrong = None if other else split_of(
                    info, held, completes_split(info["stack"], probe.state), answered_elsewhere)
                if fix := split.observe(wrong, time.monotonic()):
                    mend_split(fix, info, held, split.limit, log)
                    held = held_vips(info)
                if stuck.limit and stuck.lasted(stuck_in_transition(info, probe.state, held, answered_elsewhere),
                                                 time.monotonic()):
                    step_out(w, unit, info, log, f"{unit} sat in rscstatus transition for {stuck.limit:.0f} s, "
                             "holding no VIP while the peer serves: ", f"{c.HAWATCH_RESTARTED} {unit}")
                    held = []
                elif (deaf.observe(deaf_to_peer(info, probe.state, held, verdict, answered_elsewhere,
                                                 lambda: peer_on_link(info), taking_over), time.monotonic())
                      and w.budget_left(time.monotonic())):  # never a give-up: nobody else serves
                    step_out(w, unit, info, log, f"{c.HAWATCH_DEAF} for {deaf.limit:.0f} s while a real server "
                             f"answers and {unit} claims nothing ({probe.state}): ",
                             f"{c.HAWATCH_RESTARTED} {unit} so that it gives its verdict afresh", wait=False)
                follow_sync(sync, held, log)
                # never while another host answers for them too (a hand-over's moment of two holders)
                count, gone = announcer.observe(held if other is None else [], time.monotonic())
                stop_announcing(gone)
                if count:
                    announce(held, info, count)
                flags = ipv6_vip_flags(info)
                drop_dadfailed(info, flags, log)
                deprecator.retry(deprecate(deprecator.due(held), info, flags))
        if not probe.answering:  # starting, stopped, hung: no vacancy clock runs on from before
            vacancy.observe(False, False, time.monotonic())
        healthy = probe.answering and other is None
        heard = healthy and bool(w.step_outs) and info["stack"] == "heartbeat" and peer_active(info)
        if w.settled(healthy, time.monotonic(), heard):
            log(f"one VIP holder and {unit} answering "
                + ("and hearing its peer again" if heard else f"for {c.HAWATCH_CURED:.0f} s")
                + " since the last step-out: the step-outs cured their duplicates and free their places "
                "in the restart budget")
        sample = gauges.sample(probe.state, probe.answering, held_vips(info) if held is None else held,
                               len(w.restarts), other is not None)
        write_health({"stack": info["stack"], "unit": unit, **asdict(probe), "checked": time.time(),
                      "up": up, "verdict": verdict, "restarts": len(w.restarts), "gave_up": w.gave_up,
                      "duplicate": other, "peer_heard_at": gauges.peer_heard_at})
        if info.get("metrics"):  # node_exporter's textfile collector reads it; written whole, like the health
            write_file(Path(c.METRICS_TEXTFILE), metrics.text(sample))
        if not confirm:
            time.sleep(c.HAWATCH_INTERVAL)


def main(argv: list[str]) -> int:
    if argv not in (["watch"], ["probe"], ["reset"]):
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 2

    def log(text: str) -> None:  # the unit sends stdout to the journal (c.HAWATCH_TAG)
        print(text, flush=True)
    if argv == ["reset"]:
        reset(log=log)
        return 0
    if argv == ["probe"]:
        probe = STACKS[applied.node()["stack"]][1]()
        print(json.dumps(asdict(probe)))
        return 0 if probe.answering else 1
    return watch(log)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
