"""The isolated L2 segments a cluster lives on: a network namespace the lab creates, holding
one bridge per segment (the LAN, and e.g. a dedicated heartbeat link), one tap per NIC and the
client's address. Nothing is routed out of it: the namespace has no link to any real interface.
"""
from __future__ import annotations

import logging
import subprocess

from builder.run import CommandError, run

log = logging.getLogger("lab.net")
TEST_NETNS = "lvs-appliance-test"   # the test suites' lab
UP_NETNS = "lvs-appliance-up"       # `python -m lab up`: a user's lab, beside a test run
LAN = "br0"


def suite_netns(profile_stem: str) -> str:
    """Each profile's suite has a namespace of its own, so two can run side by side (they may
    share addresses: redundant's and keepalived's clusters are the same LAN)."""
    return f"{TEST_NETNS}-{profile_stem}"


def exists(netns: str) -> bool:
    return netns in run(["ip", "netns", "list"]).stdout.split()


def destroy(netns: str) -> None:
    """Kill every process in the namespace (QEMU, browsers, load) and delete it, with its taps."""
    if not exists(netns):
        return
    pids = run(["ip", "netns", "pids", netns], check=False).stdout.split()
    if pids:
        log.info("killing the processes left in %s: %s", netns, " ".join(pids))
        run(["kill", "-9", *pids], check=False)
    run(["ip", "netns", "delete", netns])


class Segment:
    """with Segment(netns, client_address, prefixlen) as net: the LAN bridge with the client
    address; taps and further bridges on demand. Leftovers of an interrupted run of the same
    namespace are removed first."""

    def __init__(self, netns: str, client_address: str, prefixlen: int, client_address6: str | None = None,
                 prefixlen6: int = 64):
        self.netns = netns
        self.client_address = client_address
        self.prefixlen = prefixlen
        self.client_address6, self.prefixlen6 = client_address6, prefixlen6  # a dual-stack LAN's
        self.taps: list[str] = []
        self.hosts: list[Segment] = []

    def __enter__(self) -> Segment:
        if exists(self.netns):
            log.warning("removing leftovers of an earlier run (namespace %s)", self.netns)
            destroy(self.netns)
        run(["ip", "netns", "add", self.netns])
        try:
            self.run("ip", "link", "set", "lo", "up")
            self.bridge(LAN, f"{self.client_address}/{self.prefixlen}")
            if self.client_address6:  # no duplicate address detection: usable at once
                self.run("ip", "-6", "addr", "add", f"{self.client_address6}/{self.prefixlen6}", "dev", LAN, "nodad")
        except CommandError:
            destroy(self.netns)
            raise
        return self

    def bridge(self, name: str, address: str | None = None) -> str:
        """A further L2 segment (a crossover cable, say), with an address of the lab's on it."""
        self.run("ip", "link", "add", name, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        if address:
            self.run("ip", "addr", "add", address, "dev", name)
        self.run("ip", "link", "set", name, "up")
        return name

    def tap(self, name: str, bridge: str = LAN) -> str:
        self.run("ip", "tuntap", "add", "dev", name, "mode", "tap")
        self.run("ip", "link", "set", name, "master", bridge)
        self.run("ip", "link", "set", name, "up")
        self.taps.append(name)
        return name

    def host(self, name: str, address: str, address6: str | None = None) -> Segment:
        """Another machine on the LAN (a second client): a namespace of its own, `eth0` in it
        joined to the LAN bridge by a veth pair, with a neighbour cache of its own. It goes
        with the segment."""
        netns = f"{self.netns}-{name}"
        destroy(netns)
        run(["ip", "netns", "add", netns])
        other = Segment(netns, address, self.prefixlen, address6, self.prefixlen6)
        self.hosts.append(other)
        veth = f"vh-{name}"[:15]
        self.run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self.run("ip", "link", "set", veth, "master", LAN)
        self.run("ip", "link", "set", veth, "up")
        other.run("ip", "link", "set", "lo", "up")
        other.run("ip", "addr", "add", f"{address}/{self.prefixlen}", "dev", "eth0")
        if address6:
            other.run("ip", "-6", "addr", "add", f"{address6}/{self.prefixlen6}", "dev", "eth0", "nodad")
        other.run("ip", "link", "set", "eth0", "up")
        return other

    def run(self, *argv: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (the client's side of the segment)."""
        return run(["ip", "netns", "exec", self.netns, *argv], check=check, timeout=timeout)

    def __exit__(self, *exc) -> None:
        for other in self.hosts:
            destroy(other.netns)
        destroy(self.netns)
