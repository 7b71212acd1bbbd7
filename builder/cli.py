"""Command line: `python -m builder lint PROFILE`."""
from __future__ import annotations

import argparse
import sys

from builder import profile


def cmd_lint(args: argparse.Namespace) -> int:
    try:
        cluster = profile.load(args.profile)
    except profile.ProfileError as e:
        print(e, file=sys.stderr)
        return 1
    found = profile.traps(cluster)
    for t in found:
        print(f"{args.profile}: {t}", file=sys.stderr)
    if not found:
        print(f"{args.profile}: ok ({len(cluster.nodes)} nodes, VIP {cluster.vip})")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m builder",
                                     description="Build LVS/heartbeat web cluster appliances.")
    sub = parser.add_subparsers(dest="command", required=True)
    lint = sub.add_parser("lint", help="validate a profile and flag the howto's traps")
    lint.add_argument("profile", help="cluster profile (TOML), e.g. profiles/howto.toml")
    lint.set_defaults(func=cmd_lint)
    args = parser.parse_args(argv)
    return args.func(args)
