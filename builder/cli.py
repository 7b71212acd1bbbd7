"""Command line: `python -m builder COMMAND ...`; `--help` on each explains it.

Building (lint, render, seed, image, host-setup) needs only the builder; the lab commands (up,
down, lab, bench, bench-images) import the lab package, which boots images under QEMU.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from builder import contract, host, image, profile, render, secret, seed
from builder.run import CommandError

BENCH_PROFILES = ("profiles/redundant.toml", "profiles/keepalived.toml")  # one cluster, both stacks


class Fail(Exception):
    """A user-facing error: printed without a traceback, exit status 1."""


def _load(path: str) -> profile.Cluster:
    try:
        return profile.load(path)
    except profile.ProfileError as e:
        raise Fail(str(e)) from None


def _node(cluster: profile.Cluster, name: str) -> profile.Node:
    try:
        return cluster.node(name)
    except KeyError:
        raise Fail(f"no node {name!r} in cluster {cluster.name}; "
                   f"choose one of: {', '.join(n.name for n in cluster.nodes)}") from None


def _secret(cluster: profile.Cluster, args: argparse.Namespace, create: bool) -> str | None:
    try:
        return secret.load_or_create(cluster, Path(args.profile), Path(args.secrets), create)
    except secret.SecretError as e:
        raise Fail(str(e)) from None


def cmd_lint(args: argparse.Namespace) -> int:
    cluster = _load(args.profile)
    found = profile.traps(cluster)
    for t in found:
        print(f"{args.profile}: {t}", file=sys.stderr)
    if not found:
        print(f"{args.profile}: ok ({len(cluster.nodes)} nodes, VIP {cluster.vip})")
    return 1 if found else 0


def cmd_render(args: argparse.Namespace) -> int:
    cluster = _load(args.profile)
    node = _node(cluster, args.node)
    key = _secret(cluster, args, create=False)
    if key is None:  # a preview must not create the secret as a side effect
        key = "(generated-by-`builder-seed`)"
    files = render.node_files(cluster, node, key)
    if args.out is None:
        for path, f in files.items():
            print(f"==> {path} (mode {f.mode:o})")
            print(f.content, end="" if f.content.endswith("\n") else "\n")
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        render.write_tree(files, staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"{out}: {len(files)} files for {node.name}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    cluster = _load(args.profile)
    for name in args.node or []:
        _node(cluster, name)
    key = _secret(cluster, args, create=True)
    for path in seed.write_seeds(cluster, key, Path(args.out), args.node):
        print(f"{path}: seed ISO for {path.stem}")
    return 0


README_START = "<!-- profile-reference: python -m builder reference -->\n"
README_END = "<!-- end profile-reference -->"


def with_reference(readme: str) -> str:
    """The README with its profile reference block replaced by the generated one."""
    head, _, rest = readme.partition(README_START)
    _, _, tail = rest.partition(README_END)
    return head + README_START + profile.reference() + README_END + tail


def cmd_reference(args: argparse.Namespace) -> int:
    if args.update:
        path = Path(args.update)
        text = path.read_text()
        if README_START not in text:
            raise Fail(f"{path} has no line {README_START.strip()!r} to put the reference after")
        render.write_atomic(path, with_reference(text))
        print(f"{path}: profile reference updated")
    else:
        print(profile.reference(), end="")
    return 0


def cmd_host_setup(args: argparse.Namespace) -> int:
    try:
        installed = host.ensure(tests=args.tests)
    except host.HostError as e:
        raise Fail(str(e)) from None
    print(f"host tools: installed {', '.join(installed)}" if installed else "host tools: all present")
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    for role in args.role:
        try:
            if args.out:  # another release beside the default images: its own work tree, shared caches
                out = Path(args.out).resolve()
                path = image.build(role, args.release, out=out, work=out / "work", cache=image.ROOT / "build" / "cache")
            else:
                path = image.build(role, args.release)
            print(f"{path}: {path.stat().st_size / 2**20:.0f} MiB raw disk image ({role})")
            if args.qcow2:
                q = image.to_qcow2(path)
                print(f"{q}: {q.stat().st_size / 2**20:.0f} MiB qcow2")
        except host.HostError as e:
            raise Fail(str(e)) from None
        except CommandError as e:
            tool = Path(e.argv[0]).name
            raise Fail(f"{tool} failed building {role}.img (exit {e.returncode}); no image was "
                       f"written. {tool}'s own messages are above{': ' + e.stderr.strip() if e.stderr else ''}.\n"
                       f"Hints: check free disk (`df -h build`) and that the Debian mirror answers; "
                       f"if a cached base image is stale, `rm -rf build/cache/{role}` and build "
                       f"again; --release {args.release} must be a Debian release mkosi knows") from None
    return 0


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
    from lab.machine import QemuError
    from lab.paths import ImageMissing
    try:
        return up.up(_profile_path(args.profile), args.port, args.boot_timeout)
    except (up.UpError, ImageMissing, QemuError, CommandError) as e:
        raise Fail(str(e)) from None


def cmd_down(args: argparse.Namespace) -> int:
    from lab import up
    try:
        return up.down()
    except up.UpError as e:
        raise Fail(str(e)) from None


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


def _lab_options_after_node(args: argparse.Namespace) -> None:
    """`lab block lvs-a --nic 1`: options after the node land in the command words (argparse's
    REMAINDER), where run and systemctl need them kept. Elsewhere they are read here, and any
    other word is refused rather than ignored."""
    after = argparse.ArgumentParser(prog=f"python -m builder lab {args.action} {args.node}", add_help=False)
    after.add_argument("--nic", type=int, default=args.nic)
    after.add_argument("--timeout", type=float, default=args.timeout)
    after.add_argument("-v", "--verbose", action="store_true", default=args.verbose)
    known, rest = after.parse_known_args(args.words)
    if rest:
        raise Fail(f"lab {args.action} takes a node and options, not {' '.join(rest)!r}: "
                   f"python -m builder lab {args.action} NODE [--nic N]")
    args.nic, args.timeout, args.verbose, args.words = known.nic, known.timeout, known.verbose, []


def cmd_lab(args: argparse.Namespace) -> int:
    _quiet(args)
    from lab import up
    from lab.agent import GuestAgentError
    from lab.machine import CommandFailed, QemuError
    help_, needs, handler = LAB_ACTIONS[args.action]
    if needs != "words" and args.words:
        _lab_options_after_node(args)
    try:
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
    except (up.UpError, QemuError, GuestAgentError, CommandFailed, IndexError) as e:
        raise Fail(str(e)) from None


def cmd_bench(args: argparse.Namespace) -> int:
    from lab import bench
    if args.soak and not 0 < args.soak <= 30:
        raise Fail(f"--soak {args.soak:g}: minutes from 1 to 30 (the load generator's bound)")
    if args.dual_masters is not None and not 0 < args.dual_masters <= 200:
        raise Fail(f"--dual-masters {args.dual_masters}: a count of events from 1 to 200")
    return bench.main([_profile_path(p) for p in args.profiles], args.reps, (args.soak or 0) * 60,
                      args.dual_masters or 0)


def cmd_bench_images(args: argparse.Namespace) -> int:
    from lab import bench_images
    return bench_images.main()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(
        prog="python -m builder",
        description="Turn a cluster profile into LVS web cluster appliances (heartbeat or keepalived directors).",
        epilog="Start with: python -m builder lint profiles/howto.toml")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("lint", help="validate a profile and flag the howto's traps",
                       description="Report every problem in a profile; exit 1 if there is any.")
    p.add_argument("profile", help="cluster profile (TOML), e.g. profiles/howto.toml")
    p.set_defaults(func=cmd_lint)

    secrets_help = "where generated heartbeat secrets are kept (default: .secrets)"
    p = sub.add_parser("render", help="preview the files first boot writes on a node",
                       description="Print (or write under --out) the files a node gets at first "
                       "boot, rendered from the profile exactly as inside the image.")
    p.add_argument("profile", help="cluster profile (TOML)")
    p.add_argument("node", help="node name, e.g. loadb1")
    p.add_argument("--out", metavar="DIR", help="write the files under DIR (replaced atomically)")
    p.add_argument("--secrets", default=".secrets", metavar="DIR", help=secrets_help)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("seed", help="write one NoCloud seed ISO per node",
                       description=f"Write DIR/<node>.iso (label {contract.SEED_LABEL}) for every node. The "
                       "heartbeat secret is generated on first use and reused after.")
    p.add_argument("profile", help="cluster profile (TOML)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the ISOs")
    p.add_argument("--node", action="append", metavar="NAME", help="only this node (repeatable)")
    p.add_argument("--secrets", default=".secrets", metavar="DIR", help=secrets_help)
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("reference", help="print every profile key with its default and meaning",
                       description="The profile reference, generated from the declarations in "
                       "builder/profile.py.")
    p.add_argument("--update", metavar="README", help="rewrite the reference block in this file")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("image", help="build appliance images with mkosi",
                       description="Build ROLE.img (raw GPT disk, UEFI-bootable) at the repo root, "
                       "with ROLE.packages listing its packages. Installs missing host tools "
                       "first when run as root.")
    p.add_argument("role", nargs="+", choices=image.ROLES)
    p.add_argument("--release", default="trixie", help="Debian release (default: trixie; bookworm also builds)")
    p.add_argument("--qcow2", action="store_true", help="also write ROLE.qcow2 (compressed)")
    p.add_argument("--out", metavar="DIR", help="write DIR/ROLE.img instead of ./ROLE.img (e.g. "
                   "build/bookworm for a second release)")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("host-setup", help="install the host tools builds and tests need",
                       description="Install mkosi, systemd-boot and e2fsprogs (from the "
                       "host release's backports where its own are too old), QEMU, OVMF and "
                       "the file system tools, if missing. Not root: prints the command.")
    p.add_argument("--tests", action="store_true", help="also what the VM tests need (chromium, curl)")
    p.set_defaults(func=cmd_host_setup)

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

    p = sub.add_parser("lab", help="drive the running `up` cluster: console, crash, cables, services",
                       description="Actions on the cluster `up` is running:\n" + "\n".join(
                           f"  {name:10} {h}" for name, (h, _, _) in LAB_ACTIONS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=LAB_ACTIONS, metavar="ACTION", help="see above")
    p.add_argument("node", nargs="?", help="machine name, as in the profile")
    p.add_argument("words", nargs=argparse.REMAINDER, help="the command, for run and systemctl")
    p.add_argument("--nic", type=int, default=None, help="block/unblock only NIC N (0 first)")
    p.add_argument("--timeout", type=float, default=60, help="seconds a guest command may take")
    p.add_argument("-v", "--verbose", action="store_true", help="log every command the lab runs")
    p.set_defaults(func=cmd_lab)

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
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-images", help="build times, sizes, boot-to-ready, reproducibility",
                       description="Two cold builds and a warm one per image, sizes raw and "
                       "compressed, one VM's boot to ready, and whether two builds are identical.")
    p.set_defaults(func=cmd_bench_images)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
