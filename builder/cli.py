"""Command line: `python -m builder COMMAND ...`; `--help` on each explains it.

Building: lint, render, seed, reference, image, host-setup. Day 2 over SSH: status, apply,
drain, undrain (builder/day2.py). Booting and driving clusters is the
lab's (`python -m lab`: up, down, status, console, run, ..., bench), which this package never
imports; the lab's old spellings here (`builder up`, `builder lab block ...`) are handed to it.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from builder import contract, day2, host, image, profile, remote, render, secret, seed
from builder.errors import ApplianceError
from builder.run import CommandError


class Fail(ApplianceError):
    """A command line used wrongly (a node that is not there, a bad option value)."""


def _load(path: str) -> profile.Cluster:
    return profile.load(path)


def _node(cluster: profile.Cluster, name: str) -> profile.Node:
    try:
        return cluster.node(name)
    except KeyError:
        raise Fail(f"no node {name!r} in cluster {cluster.name}; "
                   f"choose one of: {', '.join(n.name for n in cluster.nodes)}") from None


def _secret(cluster: profile.Cluster, args: argparse.Namespace, create: bool) -> str | None:
    return secret.load_or_create(cluster, Path(args.profile), Path(args.secrets), create)


def cmd_lint(args: argparse.Namespace) -> int:
    cluster = _load(args.profile)
    found = profile.traps(cluster)
    for t in found:
        print(f"{args.profile}: {t}", file=sys.stderr)
    if not found:
        vips = ", ".join(str(v) for v in cluster.vips)
        services = len(cluster.services)
        print(f"{args.profile}: ok ({len(cluster.nodes)} nodes, {services} service{'s' * (services > 1)}, "
              f"VIP{'s' * (len(cluster.vips) > 1)} {vips})")
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
    keys = seed.Keys.gather(cluster, Path(args.profile), Path(args.secrets), create=True, say=print)
    for path in seed.write_seeds(cluster, keys, Path(args.out), args.node):
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
    installed = host.ensure(tests=args.tests)
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
        except CommandError as e:
            tool = Path(e.argv[0]).name
            raise Fail(f"{tool} failed building {role}.img (exit {e.returncode}); no image was "
                       f"written. {tool}'s own messages are above{': ' + e.stderr.strip() if e.stderr else ''}",
                       hint=f"check free disk (`df -h build`) and that the Debian mirror answers; "
                       f"if a cached base image is stale, `rm -rf build/cache/{role}` and build "
                       f"again; --release {args.release} must be a Debian release mkosi knows") from e
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from builder import bundle
    key = bundle.signing_key(Path(args.secrets))
    for role in args.role:
        try:
            img = image.ROOT / f"{role}.img"
            made = bundle.write(role, img, image.partitions(img)["root"] if img.exists() else None,
                                image.output_dir(role), Path(args.out), key)
        except bundle.BundleError as e:
            raise Fail(str(e), hint=f"make {role}.img, then bundle it") from None
        size = sum(p.stat().st_size for p in made.iterdir())
        version = (made / bundle.VERSION).read_text().strip()
        print(f"{made}: {size / 2**20:.1f} MiB, version {version}, signed by {key} "
              f"(its public half: {key}.pub)")
    return 0


def _control_dir() -> Path:
    """Where ssh keeps its shared connections (remote.CONTROL_PERSIST s after the last use): one
    per user, so a second `builder status` within that time skips every handshake (about a
    second a node under TCG). A directory that is not this user's alone is not used."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"appliance-ssh-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = base.stat()
        if st.st_uid == os.getuid() and not st.st_mode & 0o077:
            return base
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="appliance-ssh."))


def _operation(args: argparse.Namespace) -> day2.Operation:
    """A profile's running cluster, reached over verified SSH with the keys in --secrets."""
    cluster = _load(args.profile)
    problems = profile.traps(cluster)
    if problems:
        raise Fail(f"{args.profile}: " + "; ".join(problems), hint=f"python -m builder lint {args.profile}")
    if not cluster.access.ssh:
        raise Fail(f"{args.profile} gives no [access] ssh_keys, so its nodes run no sshd",
                   hint="add your public key under [access] and re-seed the nodes once (README: Day 2)")
    secrets_dir = Path(args.secrets)
    keys = day2.load_keys(cluster, Path(args.profile), secrets_dir)
    known = secrets_dir / f"{cluster.name}.known_hosts"
    control = _control_dir()
    reach = remote.Reach(known, Path(args.identity) if args.identity else None, control=control)
    return day2.Operation(cluster, reach, keys)


def cmd_status(args: argparse.Namespace) -> int:
    op = _operation(args)
    started = time.monotonic()
    found = remote.statuses(op.cluster, op.reach)
    print(remote.cluster_table(op.cluster, found))
    print(f"({len(found)} nodes asked in {time.monotonic() - started:.1f} s)", file=sys.stderr)
    return 0 if all(isinstance(s, dict) for s in found.values()) else 1


def cmd_apply(args: argparse.Namespace) -> int:
    op = _operation(args)
    if args.reboot:
        op.reboot()
    else:
        op.apply(args.drain_timeout, args.dry_run)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    op = _operation(args)
    op.update(args.node, Path(args.bundle))
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    op = _operation(args)
    op.upgrade(Path(args.bundles), args.drain_timeout)
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    op = _operation(args)
    weight = 0 if args.command == "drain" else _node(op.cluster, args.node).weight
    op.set_weight(args.node, weight, args.drain_timeout)
    return 0


LAB_COMMANDS = ("up", "down", "lab", "bench", "bench-images")  # moved to `python -m lab`


def lab_argv(argv: list[str]) -> list[str]:
    """The `python -m lab` words for an old spelling: `up P` stays `up P`; `lab [OPTS] ACTION
    REST` becomes `ACTION [OPTS] REST` (each action is a command of its own there)."""
    if argv[0] != "lab":
        return argv
    words = argv[1:]
    options: list[str] = []
    while words and words[0].startswith("-"):
        takes_value = words[0] in ("--nic", "--timeout")
        options += words[:2] if takes_value else words[:1]
        words = words[2:] if takes_value else words[1:]
    return words[:1] + options + words[1:]


def command_line(prog: str, description: str, epilog: str):
    """The parser of one of the project's command lines, and its subcommands."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Run the chosen subcommand. An ApplianceError (builder/errors.py) is its message and hint
    on stderr and exit status 1; anything else is a bug and keeps its traceback."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ApplianceError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in LAB_COMMANDS:
        os.execv(sys.executable, [sys.executable, "-m", "lab", *lab_argv(argv)])
    parser, sub = command_line(
        "python -m builder",
        "Turn a cluster profile into LVS web cluster appliances (heartbeat or keepalived directors).",
        "Start with: python -m builder lint profiles/howto.toml. Booting clusters: python -m lab --help")

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
    p.add_argument("--update", metavar="FILE", help="rewrite the reference block in this file "
                   "(docs/profile-reference.md)")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser("image", help="build appliance images with mkosi",
                       description="Build ROLE.img (raw GPT disk, UEFI-bootable) at the repo root, "
                       "with ROLE.packages listing its packages. Installs missing host tools "
                       "first when run as root.")
    p.add_argument("role", nargs="+", choices=image.ROLES)
    p.add_argument("--release", default=contract.RELEASE,
                   help=f"Debian release (default: {contract.RELEASE}; bookworm also builds)")
    p.add_argument("--qcow2", action="store_true", help="also write ROLE.qcow2 (compressed)")
    p.add_argument("--out", metavar="DIR", help="write DIR/ROLE.img instead of ./ROLE.img (e.g. "
                   "build/bookworm for a second release)")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("bundle", help="write a signed update bundle of a built image",
                       description="Write OUT/ROLE-VERSION: the image's root file system (zstd), "
                       "kernel and initrd, its VERSION (ROLE.version, recorded by the build) and "
                       "SHA256SUMS signed with the update key kept "
                       "in --secrets (made on first use, 0600), whose public half every seed carries. "
                       "`builder update` and `builder upgrade` install bundles (docs/day2-design.md).")
    p.add_argument("role", nargs="+", choices=image.ROLES)
    p.add_argument("--out", default="bundles", metavar="DIR", help="where bundles go (default: bundles)")
    p.add_argument("--secrets", default=".secrets", metavar="DIR",
                   help="where the update key is kept (default: .secrets)")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("host-setup", help="install the host tools builds and tests need",
                       description="Install mkosi, systemd-boot and e2fsprogs (from the "
                       "host release's backports where its own are too old), QEMU, OVMF and "
                       "the file system tools, if missing. Not root: prints the command.")
    p.add_argument("--tests", action="store_true", help="also what the VM tests need (chromium, curl)")
    p.set_defaults(func=cmd_host_setup)

    def day2_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("profile", help="the cluster's profile (TOML) with [access] ssh_keys")
        p.add_argument("--secrets", default=".secrets", metavar="DIR",
                       help="where `builder seed` kept the secret, host keys and known_hosts (default: .secrets)")
        p.add_argument("-i", "--identity", metavar="KEY", help="your private key (default: ssh-agent or ~/.ssh)")

    p = sub.add_parser("status", help="every node's state in one table, over SSH",
                       description="Run `appliance status` on every node (verified SSH) and print one "
                       "table: stack state, VIP holders (warns unless exactly one), IPVS weights and "
                       "connections as each director sees them. Exit 1 if a node is unreachable.")
    day2_args(p)
    p.set_defaults(func=cmd_status)

    drain_help = f"seconds a leaving real server may keep connections (default: {contract.DRAIN_TIMEOUT:.0f})"
    p = sub.add_parser("apply", help="make a changed profile live on the running cluster",
                       description="Compare the profile with what the directors run, print every change, "
                       "and make it live without a reboot: real servers added, removed (drained first) "
                       "or re-weighted; checks, scheduler, fallback, SSH keys. The standby director "
                       "first, then the active one, then the real servers. Anything else is refused "
                       "with the reason; --reboot re-seeds and reboots one node at a time instead.")
    day2_args(p)
    p.add_argument("--dry-run", action="store_true", help="print the changes and stop")
    p.add_argument("--reboot", action="store_true",
                   help="re-seed and reboot each node, standby director first, each back before the next")
    p.add_argument("--drain-timeout", type=float, default=contract.DRAIN_TIMEOUT, metavar="S", help=drain_help)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("update", help="install a signed update bundle on one node and boot it",
                       description="Check BUNDLE (`builder bundle`) against the update key, copy it to NODE "
                       "over SSH, install it into the root slot the node does not run (`appliance update`) "
                       "and reboot into it on trial: a version that fails the node's health gate three "
                       "times is left and the previous one boots again by itself, which this reports as "
                       "an error. Drain a real server first (`builder drain`) to lose no request.")
    day2_args(p)
    p.add_argument("node", help="the node's name")
    p.add_argument("bundle", help="a bundle directory (bundles/ROLE-VERSION)")
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("upgrade", help="update every node of a running cluster, without an outage",
                       description="Upgrade the cluster to the bundles in BUNDLES (one director-VERSION and "
                       "one webserver-VERSION, `builder bundle`): the real servers one at a time (drained, "
                       "updated, their weight back once healthy), the standby director, then the active "
                       "one hands its VIPs over (heartbeat: the standby takes them, then hb_standby; "
                       "keepalived: its hand-over track file, FAULT and a priority-0 advert) and is updated "
                       "last. Both bundles are checked first and copied to every node in the background. "
                       "Stops at the first node not back healthy.")
    day2_args(p)
    p.add_argument("bundles", help="a directory with one bundle per image role")
    p.add_argument("--drain-timeout", type=float, default=contract.DRAIN_TIMEOUT, metavar="S", help=drain_help)
    p.set_defaults(func=cmd_upgrade)

    for name, what in (("drain", "take a real server out of service: weight 0, then wait until its "
                        "connections end (or the drain timeout)"),
                       ("undrain", "give a drained real server its profile weight back")):
        p = sub.add_parser(name, help=what.split(":")[0], description=what[0].upper() + what[1:] + ". "
                           "Only the directors change; `apply` later restores every weight to the profile's.")
        day2_args(p)
        p.add_argument("node", help="a real server's name")
        p.add_argument("--drain-timeout", type=float, default=contract.DRAIN_TIMEOUT, metavar="S", help=drain_help)
        p.set_defaults(func=cmd_drain)
    return dispatch(parser, argv)
