"""Day-2 benchmark: how long the operator's live changes take to show, and what they cost.

`python -m lab bench --day2 N` (`make bench DAY2=3`). Per profile it boots the cluster and one
real server the profile lacks, runs the bench's steady load, and does N rounds of `builder
apply` as an operator would (verified SSH, shared connections): (a) add that server, (b)
re-weight one, (d) change the check interval, (c) drain and remove the added server (back to
the profile). Each change is timed from `apply` starting until both directors' IPVS tables show
it (day2.Operation.shown_after). Then `builder status`'s SSH round over every node, cold (a
handshake each) and warm, and `appliance status` on the active director, N times each.
Prints median [min-max] and the failed requests; never fails on a figure.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

from builder import day2, profile, remote
from builder.render import write_atomic
from lab.bench import OUT, Load
from lab.cluster import Cluster

KINDS = ("(a) add a real server", "(b) re-weight", "(d) check interval",
         "(c) drain and remove (drain included)")


def changes(spec: profile.Cluster, grown: profile.Cluster) -> list[profile.Cluster]:
    """One round's targets, in KINDS order; the last is the profile again."""
    first = grown.real_servers[0]
    heavier = day2.reweighted(grown, first.name, first.weight + 1)
    service = heavier.web_service
    slower = dataclasses.replace(heavier, services=(
        dataclasses.replace(service, checkinterval=service.checkinterval + 1), *heavier.services[1:]))
    return [grown, heavier, slower, spec]


def spread(values: list[float]) -> str:
    return (f"{statistics.median(values):.1f} s [{min(values):.1f}-{max(values):.1f}] of {len(values)}"
            if values else "none")


def timed(what) -> float:
    started = time.monotonic()
    what()
    return time.monotonic() - started


def day2_profile(profile_path: Path, accel: str, rounds: int) -> dict:
    name = profile_path.stem
    shown: dict[str, list[float]] = {k: [] for k in KINDS}
    with Cluster(profile_path, OUT / "cluster" / name, accel) as cluster:
        spec = cluster.spec
        grown = cluster.with_added_server()
        cluster.boot_extra(grown, grown.real_servers[-1].name)
        cluster.wait_all_serving(300)
        cluster.wait_settled(300)
        load = Load(cluster, 1800)
        try:
            for i in range(rounds):
                for kind, target in zip(KINDS, changes(spec, grown), strict=True):
                    op = cluster.operation(target, say=lambda line: None)
                    op.apply(drain_timeout=120)
                    assert op.shown_after is not None
                    shown[kind].append(op.shown_after)
                    print(f"[{name}] round {i + 1} {kind}: both directors showed it "
                          f"{op.shown_after:.1f} s after apply started", flush=True)
            cold_reach = dataclasses.replace(cluster.reach, control=None)
            status_cold = [timed(lambda: remote.statuses(spec, cold_reach)) for _ in range(rounds)]
            status_warm = [timed(lambda: remote.statuses(spec, cluster.reach)) for _ in range(rounds)]
            active = cluster.active_director()
            appliance = [int(active.succeed("s=$(date +%s%N); appliance status >/dev/null; "
                                            "echo $(( ($(date +%s%N) - s) / 1000000 ))")) / 1000
                         for _ in range(rounds)]
        finally:
            records = load.finish(stop=True)
    figures = {**shown, "builder status cold": status_cold, "builder status warm": status_warm,
               "appliance status": appliance}
    for k, values in figures.items():
        print(f"[{name}] {k}: {spread(values)}", flush=True)
    failed = sum(not r.ok for r in records)
    print(f"[{name}] {failed} of {len(records)} requests failed during the changes", flush=True)
    return {"profile": name, "rounds": rounds, **figures, "requests": len(records), "failed": failed}


def main(profiles: list[Path], accel: str, rounds: int) -> int:
    results = [day2_profile(p, accel, rounds) for p in profiles]
    write_atomic(OUT / "day2.json", json.dumps(results, indent=1) + "\n")
    return 0
