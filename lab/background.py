"""Run a command at background CPU weight: the lane `make test` runs beside a cluster suite.

A cluster suite leaves the host's two cores half idle (waits for deadtimes, drains, downloads)
but its failover limits were measured with the CPU to itself: beside another CPU-bound lane at
equal weight the howto's resource scripts took over 180 s in CI. A cgroup with a small CPU
weight soaks up only the idle time: every QEMU of the suite is an autogroup of its own at
weight 1024 (nice 0), this lane's processes share one group of BACKGROUND_SHARES. The lane's
own work (image builds, single-VM boots with 10-minute limits) tolerates the wait.

    python -m lab.background --probe      # exit 0 when a weighted cgroup can be made here
    python -m lab.background -- CMD ...   # CMD in that cgroup (exit 3 when it cannot be made)

cgroup v1's cpu controller (cpu.shares) or cgroup v2's (cpu.weight), whichever the host mounts;
neither, or no write access, and `make test` runs its lanes one after the other instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

NAME = "appliance-background"
BACKGROUND_SHARES = 64   # cgroup v1 cpu.shares; a nice-0 process (group) has 1024
BACKGROUND_WEIGHT = 6    # cgroup v2 cpu.weight; a nice-0 group has 100
V1, V2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")


def weighted_cgroup(v1: Path = V1, v2: Path = V2) -> Path | None:
    """Make (or reuse) the low-weight cgroup; its directory, or None when the host has none to give."""
    try:
        if (v1 / "cpu.shares").exists():
            group = v1 / NAME
            group.mkdir(exist_ok=True)
            (group / "cpu.shares").write_text(f"{BACKGROUND_SHARES}\n")
            return group
        if "cpu" in (v2 / "cgroup.controllers").read_text().split():
            if "cpu" not in (v2 / "cgroup.subtree_control").read_text().split():
                (v2 / "cgroup.subtree_control").write_text("+cpu\n")
            group = v2 / NAME
            group.mkdir(exist_ok=True)
            (group / "cpu.weight").write_text(f"{BACKGROUND_WEIGHT}\n")
            return group
    except OSError:
        return None
    return None


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        return 0 if weighted_cgroup() else 1
    if argv[:1] != ["--"] or len(argv) < 2:
        print(__doc__.split("\n\n")[-2], file=sys.stderr)
        return 2
    group = weighted_cgroup()
    if group is None:
        print(f"{NAME}: no cgroup CPU controller to weight here: not running {argv[1]}", file=sys.stderr)
        return 3
    (group / "cgroup.procs").write_text(f"{os.getpid()}\n")  # children stay in it, QEMU included
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
