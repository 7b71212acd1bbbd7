"""Command line of the lab: `python -m lab COMMAND ...`; `--help` on each explains it.

A cluster on the desk (up, down), the actions that drive it from another shell (status,
console, run, systemctl, crash, start, pause, resume, block, unblock) and the benchmarks
(bench, bench-images). Everything here boots or drives QEMU machines; building images and
seeds is the builder's (`python -m builder`), which never imports the lab.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from builder import contract
from builder.cli import Fail, _load, command_line, dispatch

BENCH_PROFILES = ("profiles/redundant.toml", "profiles/keepalived.toml")  # one cluster, both stacks


def _profile_path(text: str) -> Path:
    _load(text)  # every problem reported before anything boots
    return Path(text).resolve()


def _quiet(args: argparse.Namespace) -> None:
    """The lab logs every command it runs (tests keep it); a user sees it only with -v."""
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)


def cmd_up(args: argparse.Namespace) -> int:
    _quiet(args)
    from lab import up
    return up.up(_profile_path(args.profile), args.port, args.boot_timeout)


def cmd_down(args: argparse.Namespace) -> int:
    from lab import up
    return up.down()


def _lab_status(cluster, _machine, _args) -> int:
    holders = {d.name for d in cluster.vip_holders()}
    for name, vm in cluster.vms.items():
        node = cluster.spec.node(name)
        state = "running" if vm.is_running() else "off"
        if state == "running" and not vm.agent.ping():
            state = "running (paused or not answering)"
        vip = "  holds the VIP" if name in holders else ""
        view = cluster.view(vm) if node.is_director and state == "running" else None
        stack = f"  {cluster.stack.name}: {view.state}" if view else ""  # e.g. keepalived: BACKUP
        print(f"{name:12} {node.role:10} {node.address!s:15} {state}{vip}{stack}")
    from builder import remote  # the operator's view: the same table `builder status` prints
    print("\nover ssh, as `python -m builder status` shows it:")
    print(remote.cluster_table(cluster.spec, remote.statuses(cluster.spec, cluster.reach)))
    return 0


def _lab_console(_cluster, machine, _args) -> int:
    from lab import up
    return up.console(machine)


def _lab_run(_cluster, machine, args) -> int:
    code, out = machine.execute(" ".join(args.words), timeout=args.timeout)
    print(out, end="")
    return code


def _lab_systemctl(_cluster, machine, args) -> int:
    print(machine.systemctl(" ".join(args.words), timeout=args.timeout), end="")
    return 0


def _lab_nic(method: str):
    return lambda _cluster, machine, args: getattr(machine, method)(args.nic) or 0


def _lab_plain(method: str):
    return lambda _cluster, machine, _args: getattr(machine, method)() or 0


# action -> (help, what it needs: "" nothing, "node", "words" a node and a command; handler)
LAB_ACTIONS = {
    "status": ("each machine: role, address, running or not, who holds the VIP, the stack's state",
               "", _lab_status),
    "console": ("attach to NODE's serial console (Ctrl-] leaves)", "node", _lab_console),
    "run": ("run a shell command in NODE through the guest agent: lab run loadb1 ipvsadm -L -n",
            "words", _lab_run),
    "systemctl": ("systemctl in NODE: lab systemctl webserver1 stop apache2", "words", _lab_systemctl),
    "crash": ("power loss: NODE's QEMU is killed (start boots it again)", "node", _lab_plain("crash")),
    "start": ("power NODE on again after a crash; it boots from its own disk", "node", _lab_plain("start")),
    "pause": ("hang NODE: its CPUs stop, nothing on the network", "node", _lab_plain("pause")),
    "resume": ("let a paused NODE run on", "node", _lab_plain("resume")),
    "block": ("pull NODE's network cable (--nic N: only that NIC)", "node", _lab_nic("block")),
    "unblock": ("plug NODE's cable back in", "node", _lab_nic("unblock")),
}


def cmd_lab(args: argparse.Namespace) -> int:
    _quiet(args)
    from lab import up
    help_, needs, handler = LAB_ACTIONS[args.action]
    cluster = up.attached()
    machine = None
    if needs:
        if not args.node:
            raise Fail(f"lab {args.action} needs a node: one of {', '.join(cluster.vms)}")
        if args.node not in cluster.vms:
            raise Fail(f"no node {args.node!r} in the running cluster; choose one of: "
                       f"{', '.join(cluster.vms)}")
        machine = cluster.vms[args.node]
    if needs == "words" and not args.words:
        raise Fail(f"lab {args.action} needs a command after the node name")
    return handler(cluster, machine, args)


def cmd_bench(args: argparse.Namespace) -> int:
    from lab import bench
    if args.soak and not 0 < args.soak <= 30:
        raise Fail(f"--soak {args.soak:g}: minutes from 1 to 30 (the load generator's bound)")
    if args.dual_masters is not None and not 0 < args.dual_masters <= 200:
        raise Fail(f"--dual-masters {args.dual_masters}: a count of events from 1 to 200")
    if args.day2 is not None:
        if not 0 < args.day2 <= 10:
            raise Fail(f"--day2 {args.day2}: a count of rounds from 1 to 10")
        from lab import accel as accel_probe
        from lab import bench_day2
        return bench_day2.main([_profile_path(p) for p in args.profiles], accel_probe.probe(), args.day2)
    if args.data_plane is not None and not 1 <= args.data_plane <= 60:
        raise Fail(f"--data-plane {args.data_plane}: seconds per measurement from 1 to 60")
    return bench.main([_profile_path(p) for p in args.profiles], args.reps, (args.soak or 0) * 60,
                      args.dual_masters or 0, args.data_plane or 0)


def cmd_bench_images(args: argparse.Namespace) -> int:
    from lab import bench_images
    return bench_images.main()


def main(argv: list[str] | None = None) -> int:
    parser, sub = command_line("python -m lab", "Boot a profile's cluster under QEMU, drive it, benchmark it.",
                               "Start with: python -m lab up profiles/howto.toml")
    p = sub.add_parser("up", help="boot a profile's cluster and keep it up until Ctrl-C or `down`",
                       description="Boot every machine of PROFILE from the built images, exactly as "
                       "the acceptance suite does, in a network namespace of its own. Prints each "
                       "node's ready line and console log, then forwards 127.0.0.1:PORT (only) to "
                       "the VIP for your browser. Drive it with `lab` from another shell.")
    p.add_argument("profile", help="cluster profile (TOML), e.g. profiles/howto.toml")
    p.add_argument("--port", type=int, default=8080, help="local port forwarded to the VIP (default 8080)")
    p.add_argument("--boot-timeout", type=float, default=contract.BOOT_TIMEOUT, metavar="S",
                   help=f"seconds each machine may take to become ready (default {contract.BOOT_TIMEOUT:.0f}, TCG)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every command the lab runs")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop the cluster `up` runs and remove its network",
                       description="Stop a running `up` (every VM, tap and the namespace go), or "
                       "remove what an `up` killed with SIGKILL left behind.")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("bench", help="failover benchmark: outage and failed requests per fault",
                       description="Boot each profile's cluster, run a bounded load on the VIP and "
                       "inject each fault REPS times; prints median [min-max] and writes "
                       "bench-results/report.html. Prints figures, never fails on them.")
    p.add_argument("profiles", nargs="*", default=list(BENCH_PROFILES), metavar="PROFILE",
                   help="profiles to compare (default: redundant and keepalived, the same "
                   "cluster on heartbeat and on keepalived, side by side)")
    p.add_argument("--reps", type=int, default=3, help="runs of each fault (default 3)")
    p.add_argument("--soak", type=float, metavar="MINUTES",
                   help="instead: steady load, no fault, for MINUTES (<= 30) per profile; counts "
                   "false failovers (VIP moves) and the stack's warnings (late heartbeats, "
                   "dead verdicts; VRRP MASTER transitions, faults)")
    p.add_argument("--dual-masters", type=int, metavar="N",
                   help="instead: N forced dual-master events in a row per profile (pause the "
                   "active until its peer takes over, or cut the link on keepalived), under "
                   "load; prints each one's convergence to one VIP holder, median and max")
    p.add_argument("--day2", type=int, metavar="N",
                   help="instead: N rounds of live changes per profile under load (add, re-weight, "
                   "check interval, drain and remove a real server), each timed from `builder "
                   "apply` to both directors showing it; `builder status` cold and warm")
    p.add_argument("--data-plane", type=int, metavar="SECONDS",
                   help="instead: requests/s and latency p50/p99 (wrk) through each VIP of the profile "
                   "and straight to its first real server, IPv4 and IPv6, at 1, 4 and 16 "
                   "connections, SECONDS (<= 60) each; the table gives the p50 ratio VIP/direct")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-images", help="build times, sizes, boot-to-ready, reproducibility",
                       description="Two cold builds and a warm one per image, sizes raw and "
                       "compressed, one VM's boot to ready, and whether two builds are identical.")
    p.set_defaults(func=cmd_bench_images)

    for action, (help_, needs, _handler) in LAB_ACTIONS.items():
        p = sub.add_parser(action, help=help_, description=help_)
        if needs:
            p.add_argument("node", help="machine name, as in the profile")
        if needs == "words":
            p.add_argument("words", nargs=argparse.REMAINDER, help="the command")
        if action in ("block", "unblock"):
            p.add_argument("--nic", type=int, default=None, help="only NIC N (0 first): default every NIC")
        p.add_argument("--timeout", type=float, default=60, help="seconds a guest command may take")
        p.add_argument("-v", "--verbose", action="store_true", help="log every command the lab runs")
        p.set_defaults(func=cmd_lab, action=action, **({} if needs else {"node": None}))
    return dispatch(parser, argv)
