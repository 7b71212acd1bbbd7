"""The isolated L2 segment the cluster lives on: a network namespace the harness creates,
holding a bridge, one tap per VM and the client's address. Nothing is routed out of it."""
from __future__ import annotations

import logging
import subprocess

from builder.run import CommandError, run

log = logging.getLogger("harness.net")
NETNS = "lvs-appliance-test"
BRIDGE = "br0"


def _ns(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ip", "netns", "exec", NETNS, *argv], check=check)


def exists() -> bool:
    return NETNS in run(["ip", "netns", "list"]).stdout.split()


def destroy() -> None:
    """Kill every process in the namespace (QEMU, browsers) and delete it, with its taps."""
    if not exists():
        return
    pids = run(["ip", "netns", "pids", NETNS], check=False).stdout.split()
    if pids:
        log.info("killing leftover processes in %s: %s", NETNS, " ".join(pids))
        run(["kill", "-9", *pids], check=False)
    run(["ip", "netns", "delete", NETNS])


class Segment:
    """with Segment(...) as net: a bridge with the client address, and taps on demand."""

    def __init__(self, client_address: str, prefixlen: int):
        self.client = f"{client_address}/{prefixlen}"
        self.client_address = client_address
        self.taps: list[str] = []

    def __enter__(self) -> "Segment":
        if exists():
            log.warning("removing leftovers of an earlier run (namespace %s)", NETNS)
            destroy()
        run(["ip", "netns", "add", NETNS])
        try:
            _ns("ip", "link", "set", "lo", "up")
            _ns("ip", "link", "add", BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0")
            _ns("ip", "addr", "add", self.client, "dev", BRIDGE)
            _ns("ip", "link", "set", BRIDGE, "up")
        except CommandError:
            destroy()
            raise
        return self

    def tap(self, name: str) -> str:
        _ns("ip", "tuntap", "add", "dev", name, "mode", "tap")
        _ns("ip", "link", "set", name, "master", BRIDGE)
        _ns("ip", "link", "set", name, "up")
        self.taps.append(name)
        return name

    def run(self, *argv: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (the client's side of the segment)."""
        return run(["ip", "netns", "exec", NETNS, *argv], check=check, timeout=timeout)

    def __exit__(self, *exc) -> None:
        destroy()
