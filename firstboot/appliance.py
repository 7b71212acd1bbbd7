"""`appliance`: the operator's command on a node (/usr/bin/appliance), and what
`python -m builder status|apply|drain` runs over SSH.

    appliance status [--json]   what this node is doing (firstboot/status.py)
    appliance config            what it runs: cluster, node, instance (no secret, no key)
    appliance apply  < SEED     a newer appliance.json, made live without a reboot
    appliance stage  < ENTRY    a seed for the next boot (`builder apply --reboot`)

`apply` refuses what cannot change live (builder/plan.py says which and why), writes only the
files that differ, each atomically, and reloads what reads them: ldirectord (SIGHUP: it keeps
IPVS entries and their connections, adding, re-weighting and removing real servers), keepalived
(`systemctl reload`), sshd. The applied seed is stored (applied.json), so a reboot keeps it even
with the old seed still attached (firstboot/configure.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from builder import contract
from builder.errors import ApplianceError

if TYPE_CHECKING or __name__ != "__main__" or sys.argv[1:2] != ["status"]:
    # not for `status`, which must answer in under a second under TCG: Jinja2 and the profile
    # code take most of that to import
    from builder import plan, render
    from builder.run import run
    from firstboot import configure
    from firstboot.configure import SeedError

STATE = Path(contract.STATE_DIR)


def _image_role() -> str | None:
    return configure.IMAGE_ROLE.read_text().strip() if configure.IMAGE_ROLE.exists() else None


def _differs(root: Path, path: str, f: render.File) -> bool:
    target = root / path.lstrip("/")
    try:
        return target.read_text() != f.content or (target.stat().st_mode & 0o777) != f.mode
    except OSError:
        return True


def _active(unit: str) -> bool:
    return run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0


def reload(paths: list[str]) -> list[str]:
    """Make the running daemons read the changed files; returns what was told."""
    told = []
    if contract.LDIRECTORD_CF in paths:
        # heartbeat runs ldirectord on the active director only, unless ldirectord_on_both
        if run(["ldirectord", contract.LDIRECTORD_CF, "status"], check=False).returncode == 0:
            run(["ldirectord", contract.LDIRECTORD_CF, "reload"])
            told.append("ldirectord")
    if contract.KEEPALIVED_CONF in paths and _active("keepalived.service"):
        run(["systemctl", "reload", "keepalived.service"])
        told.append("keepalived")
    if {render.SSHD_CONFIG, render.HOST_KEY} & set(paths) and _active(contract.SSH_UNIT):
        run(["systemctl", "reload", contract.SSH_UNIT])
        told.append("sshd")
    return told


def apply(data: dict, state: Path = STATE, root: Path = Path("/")) -> dict:
    """Make `data` (a seed's appliance.json for this node) what the node runs, live."""
    current = configure.stored(state, _image_role())
    new = configure.seed_from(data, current.instance_id, _image_role())
    if new.node.name != current.node.name:
        raise SeedError(f"this is {current.node.name}; the configuration sent is {new.node.name}'s")
    changes = plan.diff(current.cluster, new.cluster)
    refused = plan.refusal(changes)
    if refused:
        raise SeedError(refused)
    old_files, files = configure.files_for(current), configure.files_for(new)
    written = [p for p, f in files.items() if _differs(root, p, f)]
    removed = [p for p in old_files if p not in files and (root / p.lstrip("/")).exists()]
    render.write_tree({p: files[p] for p in written}, root)
    for p in removed:
        (root / p.lstrip("/")).unlink()
    if configure.stack_units(new) != configure.stack_units(current):  # sshd on or off
        configure.set_units(new, root)
        run(["systemctl", "start" if new.cluster.access.ssh else "stop", "--no-block", contract.SSH_UNIT])
    told = reload(written + removed)
    configure.store(new, state, "apply")
    return {"node": new.node.name, "changes": [str(c) for c in changes], "written": written,
            "removed": removed, "reloaded": told}


def stage(entry: dict, state: Path = STATE) -> str:
    """Keep a seed (instance, data) for the next boot, checked now: a bad one never reboots."""
    configure.seed_from(entry["data"], entry["instance"], _image_role())
    render.write_atomic(state / Path(contract.NEXT_SEED).name, json.dumps(entry) + "\n", 0o600)
    return f"staged {entry['instance']}: the next boot configures this node from it"


def config(state: Path = STATE) -> dict:
    seed = configure.stored(state, _image_role())
    entry = json.loads((state / Path(contract.APPLIED).name).read_text())
    return {"node": seed.node.name, "instance": seed.instance_id, "by": entry.get("by"), "at": entry.get("at"),
            "cluster": seed.data["cluster"] if seed.data else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__.split("\n\n")[0],
                                     epilog="The host's side: python -m builder status|apply|drain PROFILE")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("status", help="role, stack state, VIPs held, real servers, sync daemons")
    p.add_argument("--json", action="store_true", help="one JSON object (what `builder status` reads)")
    sub.add_parser("config", help="the configuration this node runs, as JSON (no secret, no key)")
    sub.add_parser("apply", help="make the seed JSON on stdin live (refuses what needs a reboot)")
    sub.add_parser("stage", help="keep the {instance, data} on stdin as the next boot's seed")
    args = parser.parse_args(argv)
    os.umask(0o022)
    try:
        if args.command == "status":
            from firstboot import status
            return status.main(["--json"] if args.json else [])
        if args.command == "config":
            print(json.dumps(config()))
        elif args.command == "apply":
            print(json.dumps(apply(json.load(sys.stdin))))
        else:
            print(stage(json.load(sys.stdin)))
    except (ApplianceError, ValueError, KeyError) as e:
        print(f"appliance {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
