"""`appliance`: the operator's command on a node (/usr/bin/appliance), and what
`python -m builder status|apply|drain` runs over SSH.

    appliance status [--json]   what this node is doing (firstboot/status.py)
    appliance config            what it runs: cluster, node, instance (no secret, no key)
    appliance apply  < CHANGE   files the builder rendered, made live without a reboot
    appliance session           config and apply, asked as JSON lines: one Python start for all
    appliance stage  < ENTRY    a seed for the next boot (`builder apply --reboot`)
    appliance update BUNDLE     a signed bundle into the other root slot, booted on trial
                     --stage    the slot written only (the slow part, ahead of time)
    appliance take-vips         a director: every VIP added and announced (a hand-over's first half)
    appliance release-vips      a director: every VIP dropped (its second half, on the old active)
    appliance announce          a director: the VIPs it holds announced (ARP/NA), every half second
                                for 10 s, as keepalived's MASTER event does (vrrp-state)
    appliance trial-failed      a boot on trial failed its health gate: a stack holding no VIP is
                                killed before the reboot (appliance-trial-failed.service)

`apply` takes what `builder apply` rendered and checked (builder/day2.py: the same rendering as
first boot, refused there if it cannot change live), writes only the files that differ, each
atomically, and tells the daemons that read them: ldirectord (SIGHUP: it keeps the IPVS entries
and their connections while it adds, re-weights and removes real servers), keepalived's checkers
(a reload, VRRP untouched: see reload()), sshd. It stores the new seed data
(applied.json), so a reboot keeps it even with the old seed still attached
(firstboot/configure.py). Only `stage` imports the profile code: the rest must answer in a
second or two under TCG.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from builder import contract
from builder.errors import ApplianceError
from firstboot import state as applied
from firstboot.status import held_vips

# `status` must answer in under a second under TCG: the file writer, which only apply and
# stage use, is imported there
if TYPE_CHECKING:
    from builder.files import File

STATE = applied.STATE
SSHD_FILES = (contract.SSHD_CONFIG, contract.SSH_HOST_KEY, contract.SSH_HOST_KEY + ".pub")  # sshd reads them
WANTS = Path(contract.UNIT_WANTS.lstrip("/"))


class ApplyError(ApplianceError):
    """A change this node cannot take (another node's, or malformed); nothing was written."""


def _differs(root: Path, path: str, f: File) -> bool:
    target = root / path.lstrip("/")
    try:
        return target.read_text() != f.content or (target.stat().st_mode & 0o777) != f.mode
    except OSError:
        return True


def _systemctl(*args: str) -> int:
    return subprocess.run(["systemctl", *args], check=False, timeout=60).returncode


def _hup(pidfile: str) -> bool:
    """SIGHUP the daemon whose pid file this is, if it runs: ldirectord's `reload` does the
    same after compiling its 5000 lines of Perl, seconds under TCG."""
    try:
        os.kill(int(Path(pidfile).read_text().split()[0]), signal.SIGHUP)
        return True
    except (OSError, ValueError, IndexError):
        return False


def reload(paths: list[str]) -> list[str]:
    """Make the running daemons read the changed files; returns what was told."""
    told = []
    # heartbeat runs ldirectord on the active director only, unless ldirectord_on_both
    if contract.LDIRECTORD_CF in paths and _hup(contract.LDIRECTORD_PID):
        told.append("ldirectord")
    # keepalived's checkers (real servers, weights, checks: what `builder apply` changes live)
    # reload on their own, on both directors alike: VRRP goes on undisturbed
    if contract.KEEPALIVED_CHECKERS_CONF in paths \
            and _systemctl("is-active", "--quiet", contract.KEEPALIVED_CHECKERS_UNIT) == 0:
        _systemctl("reload", contract.KEEPALIVED_CHECKERS_UNIT)
        told.append("keepalived checkers (reload)")
    if contract.KEEPALIVED_CONF in paths and _systemctl("is-active", "--quiet", contract.KEEPALIVED_UNIT) == 0:
        # VRRP's own file (a VIP's services added, say). The master reloads: it keeps its state
        # and sends adverts at once (a restart would hand the VIP over). A backup restarts: it
        # starts as BACKUP and hears the master long before its down timer; a reload kept the
        # old timer across a re-read slow under TCG, and the backup claimed the VIP for a moment
        # (suite step 15, resetting downloads in flight). The restart is queued, not waited for:
        # keepalived's VRRP process lingers a fixed second on its way out (vrrp_daemon.c,
        # shutdown timer), and `builder apply` goes on to the master meanwhile.
        if held_vips(applied.node()):
            _systemctl("reload", contract.KEEPALIVED_UNIT)
            told.append("keepalived (reload)")
        else:
            _systemctl("restart", "--no-block", contract.KEEPALIVED_UNIT)
            told.append("keepalived (restarting)")
    if set(SSHD_FILES) & set(paths) and _systemctl("is-active", "--quiet", contract.SSH_UNIT) == 0:
        _systemctl("reload", contract.SSH_UNIT)
        told.append("sshd")
    if {contract.APACHE_TLS_SITE, contract.TLS_CERT, contract.TLS_KEY} & set(paths) \
            and _systemctl("is-active", "--quiet", contract.APACHE_UNIT) == 0:
        _systemctl("reload", contract.APACHE_UNIT)  # graceful: connections in flight finish
        told.append("apache2")
    for path, unit in ((contract.NFTABLES_CONF, contract.NFTABLES_UNIT),
                       (contract.NODE_EXPORTER_DEFAULTS, contract.NODE_EXPORTER_UNIT),
                       (contract.APACHE_EXPORTER_DEFAULTS, contract.APACHE_EXPORTER_UNIT),
                       (contract.JOURNAL_UPLOAD_CONF, contract.JOURNAL_UPLOAD_UNIT)):
        if path in paths and _systemctl("is-active", "--quiet", unit) == 0:
            _systemctl("reload-or-restart", unit)  # nftables reloads its file; the exporters restart
            told.append(unit.removesuffix(".service"))
    return told


def _units(wanted: set[str], root: Path) -> list[str]:
    """sshd, the exporters and their firewall on or off as the change says (enabled as first
    boot enables them: a link; started or stopped now)."""
    told = []
    for unit in contract.OPTIONAL_UNITS:
        link = root / WANTS / unit
        want = unit in wanted
        if want == link.is_symlink():
            continue
        if want:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f"/lib/systemd/system/{unit}")
        else:
            link.unlink()
        _systemctl("start" if want else "stop", "--no-block", unit)
        told.append(f"{unit} {'started' if want else 'stopped'}")
    return told


def apply(change: dict, state: Path = STATE, root: Path = Path("/")) -> dict:
    """Make `change` ({"data": a seed's appliance.json, "files": {path: [content, mode]},
    "removed": [path]}) what this node runs, live."""
    from builder.files import File, write_tree
    current = applied.read(state)
    data = change["data"]
    if data.get("node") != current["data"].get("node") or data.get("role") != current["data"].get("role"):
        raise ApplyError(f"this is {current['data'].get('node')}; the change is for {data.get('node')}")
    files = {p: File(content, mode) for p, (content, mode) in change["files"].items()}
    written = [p for p, f in files.items() if _differs(root, p, f)]
    removed = [p for p in change.get("removed", []) if p not in files and (root / p.lstrip("/")).exists()]
    write_tree({p: files[p] for p in written}, root)
    for p in removed:
        (root / p.lstrip("/")).unlink()
    told = reload(written + removed) + _units(set(change.get("units", [])), root)
    applied.write(state, current["instance"], data, "apply", root)
    return {"node": data["node"], "written": written, "removed": removed, "reloaded": told}


def stage(entry: dict, state: Path = STATE) -> str:
    """Keep a seed (instance, data) for the next boot, checked now: a bad one never reboots."""
    from builder.files import write_atomic
    from firstboot import configure  # the profile code: checks the seed as first boot will
    role = configure.IMAGE_ROLE.read_text().strip() if configure.IMAGE_ROLE.exists() else None
    configure.seed_from(entry["data"], entry["instance"], role)
    write_atomic(applied.under(state, contract.NEXT_SEED), json.dumps(entry) + "\n", 0o600)
    return f"staged {entry['instance']}: the next boot configures this node from it"


def image_version(os_release: Path = Path("/usr/lib/os-release")) -> str | None:
    """The running root's version (IMAGE_VERSION, written by the builder), None if it names none."""
    try:
        for line in os_release.read_text().splitlines():
            if line.startswith("IMAGE_VERSION="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def config(state: Path = STATE) -> dict:
    """What this node runs, and the VIPs it holds (`builder apply` changes the standby first)."""
    entry = applied.read(state)
    node = applied.node(state)
    return {"node": entry["data"]["node"], "instance": entry["instance"], "by": entry.get("by"),
            "at": entry.get("at"), "holds": held_vips(node), "cluster": entry["data"]["cluster"],
            "version": image_version(), "layout": contract.FILE_LAYOUT}


def _run(command: str) -> int:
    """config, apply or stage: the answer on stdout, a failure as one line on stderr."""
    os.umask(0o022)
    try:
        if command == "config":
            print(json.dumps(config(STATE)))
        elif command == "apply":
            print(json.dumps(apply(json.load(sys.stdin))))
        else:
            print(stage(json.load(sys.stdin)))
    except (ApplianceError, OSError, ValueError, KeyError) as e:
        print(f"appliance {command}: {e}", file=sys.stderr)
        return 1
    return 0


SESSION_COMMANDS = ("config", "apply")


def session(requests, answers) -> int:
    """`appliance session`: `builder apply`'s questions to a director, one Python start for all
    of them (a TCG guest takes ~1 s to start Python, and a live change asked three times in a
    row). Each request is a JSON line {"do": "config" | "apply", "stdin": text}; each answer a
    JSON line {"exit": code, "stdout": ..., "stderr": ...}, what `appliance DO < stdin` gives.
    The daemons' tools apply starts write to stderr, never into the answers."""
    import contextlib
    import io
    for line in requests:
        try:
            request = json.loads(line)
            do = request["do"]
        except (ValueError, KeyError, TypeError):
            do, request = None, {}
        out, err = io.StringIO(), io.StringIO()
        if do in SESSION_COMMANDS:
            saved = sys.stdin
            sys.stdin = io.StringIO(request.get("stdin") or "")
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = _run(do)
            finally:
                sys.stdin = saved
        else:
            code = 2
            err.write(f"appliance session: not a request: {line.strip()[:80]} (do: {', '.join(SESSION_COMMANDS)})\n")
        answers.write(json.dumps({"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
        answers.flush()
    return 0


def _session() -> int:
    answers = os.fdopen(os.dup(1), "w")  # the answers' own descriptor; fd 1 (what systemctl and
    os.dup2(2, 1)                        # the rest inherit) now goes to stderr
    return session(sys.stdin, answers)


def _move_vips(command: str) -> int:
    """take-vips or release-vips, on a director (firstboot/hawatch.py)."""
    from firstboot import hawatch
    node = applied.node(STATE)
    if not node.get("vips"):
        print(f"appliance {command}: not a director: this node holds no VIP", file=sys.stderr)
        return 1
    if node.get("stack") == "keepalived":  # VIPs added beside VRRP's back make two masters
        print(f"appliance {command}: keepalived moves its VIPs itself; to hand them over, on the master: "
              f"echo 1 > {contract.KEEPALIVED_HAND_OVER} (0 takes part again)", file=sys.stderr)
        return 1
    if command == "take-vips":
        took = hawatch.take_vips(node)
        said = f"added and announced {', '.join(took)}" if took else "every VIP was here already"
    else:
        held = hawatch.release_vips(node)
        said = f"dropped {', '.join(held)}" if held else "held no VIP"
    print(said)
    _journal(f"{command} (a graceful hand-over): {said}")  # why the VIPs moved: not a failure
    return 0


def _announce() -> int:
    """The VIPs this director holds announced now (firstboot/hawatch.py: announce_takeover)."""
    from firstboot import hawatch
    node = applied.node(STATE)
    held = hawatch.announce_takeover(node) if node.get("vips") else []
    said = (f"announcing {', '.join(held)} every {contract.ANNOUNCE_INTERVAL_MS} ms for "
            f"{contract.ANNOUNCE_EARLY_FOR} s" if held else "holds no VIP: nothing to announce")
    print(said)
    _journal(f"announce: {said}")  # when a takeover's clients were told, beside the transition
    return 0


def _trial_failed() -> int:
    """A boot on trial failed its health gate; its unit reboots next. A director's stack holding no
    VIP has nothing to hand over, so it is killed, not stopped: heartbeat holds a stop until its
    communication is up (initdead: 30 s and more while its peer is away), and every failed try
    waited that long before the next. One holding a VIP stops with the reboot, handing it over."""
    if not Path(contract.TRIAL_BOOT_VAR).exists():
        print("appliance: this boot is not on trial: nothing done", file=sys.stderr)
        return 1
    try:
        node = applied.node(STATE)
    except (OSError, ValueError):
        return 0  # not configured: no stack runs
    if node.get("stack") and not held_vips(node):
        from firstboot import hawatch
        unit = hawatch.STACKS[node["stack"]][0]
        _systemctl("kill", "--signal=SIGKILL", unit)
        _journal(f"trial failed: {unit} killed (it held no VIP); rebooting")
    return 0


def _journal(line: str) -> None:
    """One line in the node's journal, as `appliance` (syslog)."""
    import syslog
    syslog.openlog("appliance")
    syslog.syslog(syslog.LOG_INFO, line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # what `builder status|apply` runs over SSH, without argparse: a seventh of a second under
    # TCG, twice on the way of a live change (`apply` asks both directors, then changes them)
    if argv in (["status"], ["status", "--json"]):
        from firstboot import status
        return status.main(argv[1:])
    if argv in (["config"], ["apply"]):
        return _run(argv[0])
    if argv == ["announce"]:  # at a takeover, before argparse: the sooner the better
        return _announce()
    if argv == ["session"]:
        return _session()
    if argv == ["trial-failed"]:
        return _trial_failed()
    import argparse
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__.split("\n\n")[0],
                                     epilog="The host's side: python -m builder status|apply|drain PROFILE")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("status", help="role, stack state, VIPs held, real servers, sync daemons")
    p.add_argument("--json", action="store_true", help="one JSON object (what `builder status` reads)")
    sub.add_parser("config", help="the configuration this node runs, as JSON (no secret, no key)")
    sub.add_parser("apply", help="write the rendered files on stdin and reload their daemons")
    sub.add_parser("session", help="answer config and apply requests, one JSON line each (what `builder "
                                   "apply` asks a director)")
    sub.add_parser("stage", help="keep the {instance, data} on stdin as the next boot's seed")
    p = sub.add_parser("update", help="install a signed update bundle in the other root slot and boot it "
                                      "on trial (the previous version boots again if it fails three times)")
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="a directory `python -m builder bundle` wrote")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--no-reboot", action="store_true", help="install only; the next reboot tries it")
    when.add_argument("--stage", action="store_true", help="write the slot only, booted by nothing: a later "
                      "`appliance update` of the same bundle finds it staged and arms it in seconds")
    for name, what in (("take-vips", "add every VIP and announce it: the first half of a graceful hand-over, on "
                                      "the standby (`builder upgrade` runs it, then the active's hand-over)"),
                       ("release-vips", "drop every VIP: the second half, on the old active, whose stack's own "
                                        "release follows"),
                       ("announce", "announce the VIPs this director holds (gratuitous ARP, unsolicited NA) every "
                                    "half second for 10 s, as after a takeover"),
                       ("trial-failed", "a boot on trial failed its health gate: kill the HA stack if it holds "
                                        "no VIP (appliance-trial-failed.service reboots next)")):
        sub.add_parser(name, help=what)
    args = parser.parse_args(argv)
    if args.command == "announce":
        return _announce()
    if args.command == "session":
        return _session()
    if args.command in ("take-vips", "release-vips"):
        return _move_vips(args.command)
    if args.command == "status":
        from firstboot import status
        return status.main(["--json"] if args.json else [])
    if args.command == "update":
        from firstboot import update
        try:
            return update.main(args.bundle, reboot=not (args.no_reboot or args.stage), stage=args.stage)
        except (ApplianceError, OSError) as e:
            print(f"appliance update: {e}", file=sys.stderr)
            return 1
    return _run(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
