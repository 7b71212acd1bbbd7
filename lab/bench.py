"""Failover benchmark: request loss and outage per fault, on the real cluster of each profile.

`python -m lab bench` (`make bench`). For each profile (default: redundant and keepalived,
the same cluster on each stack, compared side by side)
it boots the cluster, runs a steady, bounded HTTP load from the client namespace, and injects
one fault at a time, each REPS times (default 3) with recovery in between: Apache stop on the
first real server, active-director crash (a hang: to the network, a power loss),
crashed director's return, standby crash, and a cut of the standby director's link (split
brain, lasting until the pair has settled). A crashed director returns through
Cluster.revive (resumed with its link cut, cleared as a reboot would, heartbeat started anew):
~15 s where a TCG reboot takes 100-150 s, which is what keeps both profiles at 3 runs under 30
minutes. It prints a table (median and range) and writes a self-contained HTML report with a
timeline per fault to bench-results/. It prints figures; it never fails on a threshold.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder import contract as c
from builder import image
from builder.render import write_atomic
from lab import accel as accel_probe
from lab import bench_dataplane, chaos, faults, report, wait
from lab.cluster import Cluster
from lab.loadgen import Request
from lab.paths import ROOT

OUT = ROOT / "bench-results"
RATE, TIMEOUT, LEAD = 20, 1.0, 2.0
TAIL = 3.0  # load kept after a fault's recovery, for the latency "after"
LOADGEN = Path(__file__).with_name("loadgen.py")


@dataclass
class Window:
    profile: str
    fault: str
    rep: int
    fault_at: float
    records: list[Request]
    recovered_at: float | None = None
    notes: list[str] = field(default_factory=list)
    victim: str | None = None  # the real server a fault took down, if any
    transfers: list[int] | None = None  # in-flight downloads across the fault: [broken, total]

    def after(self):
        return [r for r in self.records if r.t >= self.fault_at]

    def before(self):
        return [r for r in self.records if r.t < self.fault_at]

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.after())

    @property
    def outage(self) -> float:
        """Fault to the sending of the last failed request (0: none failed): every request
        sent later succeeded. Not to its end, which adds the client's own timeout (1 s to a
        dead director's MAC) to what the cluster did; complete() keeps that figure."""
        bad = [r.t for r in self.after() if not r.ok]
        return max(bad) - self.fault_at if bad else 0.0

    def failed_after(self, seconds: float) -> list[Request]:
        """Failed requests sent more than `seconds` after the fault (e.g. past a check window)."""
        return [r for r in self.records if not r.ok and r.t > self.fault_at + seconds]

    def complete(self, final) -> float:
        """Fault to the last request not yet in the final state."""
        bad = [r.t + r.latency for r in self.after() if not final(r)]
        return max(bad) - self.fault_at if bad else 0.0

    @staticmethod
    def pct(records, q) -> float:
        lat = sorted(r.latency for r in records if r.ok)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")


class Load:
    """loadgen.py inside the namespace, its JSON lines going to a file. Not a pipe: nobody reads
    a pipe until the window ends, and a full pipe (~700 lines, 35 s at 20 req/s) blocked the
    load generator, so every longer window used to stop recording after ~35 s."""

    def __init__(self, cluster: Cluster, duration: float, timeout: float = TIMEOUT):
        self.out = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", cluster.netns, sys.executable, str(LOADGEN), cluster.vip.url("/"),
             "--rate", str(RATE), "--duration", str(duration), "--timeout", str(timeout)],
            stdout=self.out, text=True)
        self.started = time.time()

    def finish(self, stop: bool = False) -> list[Request]:
        if stop:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=1900)
        with self.out:
            self.out.seek(0)
            # a SIGTERM can cut the last line short
            return [Request.from_line(line) for line in self.out if line.startswith("{") and line.endswith("}\n")]


def pause_until(t: float) -> None:
    """Bench timeline: inject the fault LEAD seconds into the load window."""
    time.sleep(max(0.0, t - time.time()))


@dataclass
class Run:
    """One profile's cluster under the bench: what every scenario reads, and its windows so far."""
    cluster: Cluster
    name: str
    windows: list[Window] = field(default_factory=list)

    def window(self, fault: str, rep: int, duration: float, inject, stop_when=None,
               check_window: float | None = None, victim: str | None = None) -> Window:
        """Load for at most `duration`; with stop_when, until it returns and TAIL more seconds.
        With check_window, a note counts the requests that still failed after it."""
        load = Load(self.cluster, duration)
        pause_until(load.started + LEAD)
        at = time.time()
        notes = inject() or []
        if stop_when:
            stop_when()
            time.sleep(TAIL)
        w = Window(self.name, fault, rep, at, load.finish(stop=bool(stop_when)), notes=notes, victim=victim)
        if check_window is not None:
            late = w.failed_after(check_window)
            w.notes.append(f"failed-after-{check_window:.0f}s-check-window:{len(late)}")
            # what each late failure was and when: a refusal is a request sent to the dead server
            w.notes += [f"late:{r.error}@{r.t - at:.1f}s" for r in late]
        self.windows.append(w)
        print(f"[{self.name}] {fault} #{rep}: outage {w.outage:.1f}s, {w.failed} failed "
              f"{' '.join(w.notes)}", flush=True)
        return w


def apache_stop(run: Run, rep: int) -> None:
    cluster, window = run.cluster, run.window
    check = cluster.spec.web_service.check_window
    fault = faults.FAULTS["apache stop"]
    web = fault.victim(cluster)
    window(fault.name, rep, LEAD + check + 10, lambda: fault.inject(web), check_window=check, victim=web.name)
    fault.undo(cluster, web)
    cluster.wait_all_serving(check * 3 + 30)


def director_crash_and_return(run: Run, rep: int) -> None:
    cluster, name, window = run.cluster, run.name, run.window
    hb, stack = cluster.spec.failover, cluster.stack
    fault = faults.FAULTS["director hang"]  # a crash to the network, revived in seconds
    active = fault.victim(cluster)
    standby = cluster.standby_of(active)
    downloads = faults.InFlight(cluster, fault.transfers)
    time.sleep(3)  # under way, and synchronised to the standby
    # what the standby holds at the crash: a broken transfer is explained by these
    synced = sum("ESTABLISHED" in e for e in cluster.sync_entries(standby))
    sync = [f"sync-master-on-active:{stack.sync_running(active, 'master')}",
            f"sync-backup-on-standby:{stack.sync_running(standby, 'backup')}",
            f"standby-held-established:{synced}"]
    w = window("director crash", rep, LEAD + fault.limit(cluster), lambda: fault.inject(active),
               stop_when=lambda: fault.wait_recovered(cluster))
    w.transfers = [len(downloads.broken(timeout=hb.takeover_limit + 300)), fault.transfers]
    if w.transfers[0]:
        w.notes += sync
    print(f"[{name}] director crash #{rep}: {w.transfers[0]} of {fault.transfers} transfers broken",
          flush=True)
    window("director return", rep, 600, lambda: fault.undo(cluster, active),
           stop_when=lambda: cluster.wait_rejoined(active, hb.rejoin_limit))


def standby_crash(run: Run, rep: int) -> None:
    cluster, window = run.cluster, run.window
    hb = cluster.spec.failover
    fault = faults.FAULTS["standby hang"]
    standby = fault.victim(cluster)
    window("standby crash", rep, LEAD + fault.limit(cluster), lambda: fault.inject(standby))
    fault.undo(cluster, standby)
    cluster.wait_rejoined(standby, hb.rejoin_limit)


def split_brain(run: Run, rep: int) -> None:
    cluster, window = run.cluster, run.window
    hb, stack = cluster.spec.failover, cluster.stack
    deadtime = hb.deadtime_s
    fault = faults.FAULTS["partition"]
    standby = fault.victim(cluster)
    notes: list[str] = []
    limit = fault.limit(cluster)
    starts: dict[str, int] = {}
    restarted: set[str] = set()

    def holders() -> str:
        return "+".join(d.name for d in cluster.vip_holders()) or "none"

    def split() -> list[str]:
        fault.inject(standby)
        time.sleep(hb.past_verdict)  # hold the cut past the stack's deadtime
        notes.append(f"cut:{holders()}")
        starts.update((d.name, stack.starts(d)) for d in cluster.directors)
        fault.undo(cluster, standby)
        return notes

    def restarted_and_settled() -> bool:
        """heartbeat v1 restarts itself on both directors after a partition heals; the
        pair can look settled between one's takeover and the other's restart (15 s
        in the howto), so settled only counts once both have started anew."""
        if not stack.heals_by_restart:
            return cluster.settled()
        restarted.update(d.name for d in cluster.directors
                         if d.name not in restarted and stack.starts(d) > starts[d.name])
        return len(restarted) == len(cluster.directors) and cluster.settled()

    def settle() -> None:
        """The window lasts until the pair has settled: heartbeat's own recovery from the
        partition (give up, restart, initdead, take over) is part of what is measured."""
        try:
            wait.steady(restarted_and_settled, 10, limit, "the pair settled (heartbeat: both restarted)")
            notes.append(f"settled:{holders()}")
        except wait.Timeout:
            # record what it is stuck in, then restart the stack on both directors so
            # the next run starts from a settled pair again
            missing = sorted({d.name for d in cluster.directors} - restarted) if stack.heals_by_restart else []
            notes.append(f"not-settled-in-{limit:.0f}s:{holders()}"
                         + (f",no-restart-on:{'+'.join(missing)}" if missing else ""))
            for d in cluster.directors:
                d.systemctl(f"restart {stack.daemon}")
            cluster.wait_settled(limit, max(10.0, hb.past_verdict))
            notes.append(f"after-{stack.name}-restarts:{holders()}")
    # load for the cut and two tries at settling; stopped as soon as the pair settles
    label = "partition" if cluster.spec.link else "split brain"  # with a link: every cable
    window(label, rep, LEAD + hb.past_verdict + 2 * (limit + deadtime + 10), split, stop_when=settle)


def standby_lan_cut(run: Run, rep: int) -> None:
    """The standby's LAN cable (NIC 0) out for two deadtimes: heard on the link, it must
    take nothing over."""
    cluster, window = run.cluster, run.window
    hb = cluster.spec.failover
    fault = faults.FAULTS["standby LAN cut"]
    standby = fault.victim(cluster)
    window(fault.name, rep, LEAD + fault.limit(cluster) + TAIL, lambda: fault.inject(standby))
    fault.undo(cluster, standby)
    cluster.wait_settled(hb.rejoin_limit)


def active_lan_cut(run: Run, rep: int) -> None:
    """The active's LAN cable out: ipfail hands the VIP to the peer, which still reaches
    the ping node; the cable comes back once it has."""
    cluster, window = run.cluster, run.window
    hb = cluster.spec.failover
    fault = faults.FAULTS["active LAN cut"]
    active = fault.victim(cluster)
    window(fault.name, rep, LEAD + fault.limit(cluster), lambda: fault.inject(active),
           stop_when=lambda: fault.wait_recovered(cluster))
    fault.undo(cluster, active)
    cluster.wait_settled(hb.rejoin_limit)


def run_profile(profile_path: Path, accel: str, reps: int) -> tuple[list[Window], str]:
    """The profile's windows, and a line on how long its cluster took to start."""
    name = profile_path.stem
    started = time.monotonic()
    with Cluster(profile_path, OUT / "cluster" / name, accel) as cluster:
        wait.until(lambda: cluster.vip.get().ok, 300, "the first good response on the VIP")
        first_ok = time.monotonic() - started
        cluster.wait_all_serving(120)
        print(f"[{name}] cluster up; first good response {first_ok:.0f}s after start", flush=True)

        run = Run(cluster, name)
        hb, stack = cluster.spec.failover, cluster.stack
        families = [apache_stop, director_crash_and_return, standby_crash, split_brain]
        if cluster.spec.link:
            families[3:3] = [standby_lan_cut] + ([active_lan_cut] if hb.ping_nodes else [])
        for family in families:
            for rep in range(1, reps + 1):
                try:
                    family(run, rep)
                except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
                    print(f"[{name}] {family.__name__} #{rep}: stopped by "
                          f"{type(e).__name__}: {e}", flush=True)
                save(run.windows)  # kept even if a later fault breaks the run
        # flapping check for the timings: the stack's warnings in this boot of each director
        for d in cluster.directors:
            try:
                signs = ", ".join(f"{k} {journal_count(cluster, d, p)}" for k, p in stack.log_signs().items())
            except Exception as e:  # noqa: BLE001 - the figures so far matter more
                signs = f"unknown ({e})"
            print(f"[{name}] {d.name} since its last boot: {signs}", flush=True)
    return run.windows, (f"{name}: all {len(cluster.vms)} VMs ready {cluster.boot_seconds:.0f} s after they "
                     f"started, first good response on the VIP {first_ok:.0f} s after")


def journal_count(cluster: Cluster, director, pattern: str, units: str | None = None) -> int:
    """How many of the stack's journal lines of this boot (or those of `units`, journalctl's
    words) match `pattern` (grep -E)."""
    out = director.execute(f"journalctl -b --no-pager -o cat {units or cluster.stack.journal_units()} "
                           f"2>/dev/null | grep -cE '{pattern}'")[1]
    return int(out.strip() or 0)


def soak_profile(profile_path: Path, accel: str, seconds: float) -> dict:
    """Steady load and no fault for `seconds`: every VIP move is a false failover, and the
    journals say how close the stack came to one (heartbeat: late heartbeats, dead verdicts;
    keepalived: MASTER transitions, faults)."""
    name = profile_path.stem
    with Cluster(profile_path, OUT / "cluster" / name, accel) as cluster:
        cluster.wait_all_serving(300)
        cluster.wait_settled(300)
        signs = cluster.stack.log_signs()
        before = {d.name: {k: journal_count(cluster, d, p) for k, p in signs.items()} for d in cluster.directors}
        holder, moves, polls = cluster.active_director().name, 0, 0
        load = Load(cluster, seconds)
        while time.time() < load.started + seconds:
            time.sleep(5)
            now = "+".join(d.name for d in cluster.vip_holders()) or "none"
            polls += 1
            if now != holder:
                print(f"[{name}] soak: the VIP moved from {holder} to {now} "
                      f"{time.time() - load.started:.0f}s in", flush=True)
                holder, moves = now, moves + 1
        records = load.finish()
        after = {d.name: {k: journal_count(cluster, d, p) for k, p in signs.items()} for d in cluster.directors}
        restarts = sum(journal_count(cluster, d, f"{c.HAWATCH_RESTARTED}|{c.HAWATCH_GAVE_UP}",
                                     units=f"-t {c.HAWATCH_TAG}")
                       for d in cluster.directors)
    result = {"profile": name, "seconds": seconds, "requests": len(records),
              "failed": sum(not r.ok for r in records), "vip moves": moves, "polls": polls,
              **{k: sum(after[d][k] - before[d][k] for d in after) for k in signs},
              "watchdog restarts": restarts}
    print(f"[{name}] soak {seconds / 60:.0f} min: " + ", ".join(f"{k} {v}" for k, v in result.items()
                                                            if k != "profile"), flush=True)
    return result


def dual_masters_profile(profile_path: Path, accel: str, count: int) -> dict:
    """`count` forced dual-master events in a row (lab/chaos.py) under load: each must come
    back to one VIP holder with both stacks answering; a permanent split brain stops the run."""
    name = profile_path.stem
    events: list[chaos.Event] = []
    with Cluster(profile_path, OUT / "cluster" / name, accel) as cluster:
        cluster.wait_all_serving(300)
        cluster.wait_settled(300)
        methods = chaos.methods(cluster)
        load = Load(cluster, 1800)
        try:
            for i in range(count):
                try:
                    e = chaos.dual_master(cluster, methods[i % len(methods)],
                                          cluster.spec.failover.takeover_limit + 120)
                except wait.Timeout as err:
                    print(f"[{name}] dual master {i + 1}: NOT HEALED ({err})\n{cluster.pair_state()}\n"
                          f"{cluster.director_journals(40)}", flush=True)
                    break
                events.append(e)
                print(f"[{name}] dual master {i + 1} ({e.how} {e.victim}, both held: {e.both_held}): "
                      f"one holder ({e.holder}) after {e.converged:.1f} s", flush=True)
        finally:
            records = load.finish(stop=True)
        restarts = {d.name: journal_count(cluster, d, c.HAWATCH_RESTARTED, units=f"-t {c.HAWATCH_TAG}")
                    for d in cluster.directors}
        step_outs = {d.name: journal_count(cluster, d, c.HAWATCH_STEPPED_OUT, units=f"-t {c.HAWATCH_TAG}")
                     for d in cluster.directors}
    took = sorted(e.converged for e in events)
    result = {"profile": name, "events": count, "healed": len(events),
              "both held": sum(e.both_held for e in events),
              "median s": round(statistics.median(took), 1) if took else None,
              "max s": round(max(took), 1) if took else None,
              "requests": len(records), "failed": sum(not r.ok for r in records),
              "watchdog restarts": restarts, "step-outs": step_outs}
    print(f"[{name}] " + chaos.summary(events) if events else f"[{name}] no event healed", flush=True)
    print(f"[{name}] " + ", ".join(f"{k} {v}" for k, v in result.items() if k != "profile"), flush=True)
    return result


def save(windows: list[Window]) -> None:
    write_atomic(OUT / "windows.jsonl", "".join(json.dumps(asdict(w)) + "\n" for w in windows))


def final(w: Window):
    """A request in the fault's final state: answered, and not by the server it took down."""
    return lambda r: r.ok and (w.victim is None or r.server != w.victim)


def summary(windows: list[Window]) -> list[dict]:
    rows = []
    for key in dict.fromkeys((w.profile, w.fault) for w in windows):
        ws = [w for w in windows if (w.profile, w.fault) == key]
        figures: dict[str, list[float]] = {
            "outage": [w.outage for w in ws], "failed": [w.failed for w in ws],
            "complete": [w.complete(final(w)) for w in ws],
            "p50 before": [w.pct(w.before(), .5) for w in ws], "p99 before": [w.pct(w.before(), .99) for w in ws],
            "p50 after": [w.pct(w.after(), .5) for w in ws], "p99 after": [w.pct(w.after(), .99) for w in ws],
        }
        moved = [w.transfers for w in ws if w.transfers]
        notes = sorted({n for w in ws for n in w.notes})
        if moved:  # in-flight downloads across the fault: broken of all, summed over the runs
            notes.insert(0, f"transfers broken: {sum(b for b, _ in moved)} of {sum(t for _, t in moved)}")
        rows.append({"profile": key[0], "fault": key[1], "runs": len(ws),
                     **{k: (statistics.median(v), min(v), max(v)) for k, v in figures.items()},
                     "notes": notes})
    return rows


def side_by_side(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per fault, one column per profile ("outage median [min-max] s, failed requests,
    broken transfers") and which profile wins it: the lower median outage, then the fewer
    failed requests; "tie" when both are equal. For comparing stacks on the same cluster."""
    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    cell = {(r["profile"], r["fault"]): r for r in rows}
    table = []
    for fault in dict.fromkeys(r["fault"] for r in rows):
        cells, scores = [], {}
        for p in profiles:
            r = cell.get((p, fault))
            if r is None:
                cells.append("-")
                continue
            m, lo, hi = r["outage"]
            broken = next((n.split(": ", 1)[1] for n in r["notes"] if n.startswith("transfers broken")), None)
            cells.append(f"{m:.1f} [{lo:.1f}-{hi:.1f}] s, {r['failed'][0]:.0f} failed"
                         + (f", {broken} transfers broken" if broken else ""))
            scores[p] = (round(m, 1), r["failed"][0])
        best = min(scores.values()) if scores else None
        winners = [p for p, v in scores.items() if v == best]
        table.append([fault, *cells, winners[0] if len(winners) == 1 and len(scores) > 1 else "tie"])
    return ["fault", *profiles, "wins"], table


def print_table(rows: list[dict]) -> None:
    print(f"\nfailover benchmark: {RATE} req/s, {TIMEOUT}s timeout; median [min-max] of each run")
    print(f"{'profile':14} {'fault':16} {'outage s':>16} {'failed':>12} {'complete s':>16} "
          f"{'p50/p99 ms before':>18} {'after':>12}")
    for r in rows:
        def mmr(k, f="{:.1f}", r=r):
            m, lo, hi = r[k]
            return f"{f.format(m)} [{f.format(lo)}-{f.format(hi)}]"
        print(f"{r['profile']:14} {r['fault']:16} {mmr('outage'):>16} {mmr('failed', '{:.0f}'):>12} "
              f"{mmr('complete'):>16} {r['p50 before'][0]:8.0f}/{r['p99 before'][0]:<8.0f} "
              f"{r['p50 after'][0]:5.0f}/{r['p99 after'][0]:<6.0f} {' '.join(r['notes'])}")


def built_images() -> list[str]:
    """How the images in use were built, from what `make director.img webserver.img` recorded."""
    lines = []
    for role in image.ROLES:
        path = ROOT / "build" / role / "build.json"
        if not path.exists():
            lines.append(f"image {role}: no build record (built before builds were recorded)")
            continue
        b = json.loads(path.read_text())
        lines.append(f"image {role} ({b['release']}): built in {b['seconds']:.0f} s "
                     f"({'incremental' if b['incremental'] else 'no mkosi cache'}), "
                     f"raw {b['raw'] >> 20} MiB, {b['allocated'] >> 20} MiB allocated")
    return lines


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")  # tear the cluster down as on Ctrl-C


def main(profiles: list[Path], reps: int = 3, soak: float = 0, dual_masters: int = 0,
         data_plane: int = 0) -> int:
    """Run the benchmark on each profile; figures printed, report in bench-results/. With
    `soak` (seconds), only a steady load with no fault per profile, counting false failovers;
    with `dual_masters`, only that many forced dual-master events per profile; with
    `data_plane` (seconds per point), only wrk through each VIP and straight to a real server."""
    signal.signal(signal.SIGTERM, _sigterm)
    OUT.mkdir(exist_ok=True)
    # the modes with no fault table: one JSON of results per profile
    modes: list[tuple[float, Callable[[Path, str, Any], dict], str]] = [
        (dual_masters, dual_masters_profile, "dual-masters.json"), (soak, soak_profile, "soak.json"),
        (data_plane, lambda p, accel, s: bench_dataplane.dataplane_profile(p, accel, s, OUT), "data-plane.json")]
    for wanted, run_one, out in modes:
        if wanted:
            accel = accel_probe.probe()
            results = [run_one(p, accel, wanted) for p in profiles]
            write_atomic(OUT / out, json.dumps(results, indent=1) + "\n")
            return 0
    (OUT / "windows.jsonl").unlink(missing_ok=True)  # this run's windows only
    accel = accel_probe.probe()
    images_json = OUT.parent / "build" / "bench" / "images.json"  # from `make bench-images`
    images = json.loads(images_json.read_text()) if images_json.exists() else []
    windows, startup = [], []
    started = time.monotonic()
    for p in profiles:
        w, line = run_profile(p, accel, reps)
        windows += w
        startup.append(line)
    startup += built_images()
    rows = summary(windows)
    print_table(rows)
    side = side_by_side(rows) if len(profiles) > 1 else None
    if side:
        print("\nside by side (outage median [min-max], failed requests median):")
        for cells in [side[0], ["---"] * len(side[0]), *side[1]]:
            print("| " + " | ".join(cells) + " |")
    print("\n".join(startup))
    for r in images:
        print(f"image benchmark, {r['role']}: cold build {r['cold']:.0f}s, warm {r['warm']:.0f}s, "
              f"raw {r['raw'] >> 20} MiB, zstd {r['zstd'] >> 20} MiB, boot to ready {r['ready']:.1f}s, "
              f"two builds {'identical' if r['identical'] else 'differ'}")
    if not images:
        print("image benchmark figures (two cold builds each, sizes compressed, one VM's boot, "
              "reproducibility): none yet, run `make bench-images`")
    page = report.write(OUT, windows, rows, startup, images,
                        f"{RATE} req/s, {TIMEOUT}s timeout, {accel}, {os.cpu_count()} cores", side)
    print(f"\nreport: {page} (screenshot {report.screenshot(page)}); "
          f"wall time {(time.monotonic() - started) / 60:.1f} min")
    return 0

