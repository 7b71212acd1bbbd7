"""The faults the acceptance suite and `make bench` inject, defined once.

Each says whom it hits, how it is made and undone, what ends it for the client and how long
that may take, and how many downloads ride through it. The suite asserts on them one at a
time; the bench repeats them under a steady load and measures the windows.

    fault = FAULTS["director crash"]
    victim = fault.victim(cluster)        # the active director
    fault.inject(victim)                  # power loss
    wait.until(lambda: fault.recovered(cluster), fault.limit(cluster), fault.awaited)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING

from builder import profile, render
from lab import wait
from lab.machine import Machine

if TYPE_CHECKING:
    from lab.cluster import Cluster

TRANSFERS = 4  # slow downloads in flight across a director crash (the suite's and the bench's)
LAN = 0        # NIC 0 is the LAN cable, NIC 1 the dedicated link


@dataclass(frozen=True)
class Fault:
    name: str
    victim: Callable[[Cluster], Machine]                # whom it hits, in this cluster's state
    inject: Callable[[Machine], object]
    undo: Callable[[Cluster, Machine], object]          # what ends it (power on, a revive, a cable)
    limit: Callable[[Cluster], float]                   # how long recovery may take (s)
    recovered: Callable[[Cluster], bool] | None = None  # the client is served again (None: it
                                                        # must never stop being served)
    awaited: str = ""                                   # what `recovered` waits for, in words
    transfers: int = 0                                  # downloads in flight across it

    def wait_recovered(self, cluster: Cluster) -> None:
        recovered = self.recovered
        if recovered:
            wait.until(lambda: recovered(cluster), self.limit(cluster), self.awaited, interval=0.2)


def _active(cluster: Cluster) -> Machine:
    return cluster.active_director()


def _standby(cluster: Cluster) -> Machine:
    return cluster.standby_of(cluster.active_director())


def _first_server(cluster: Cluster) -> Machine:
    return cluster[cluster.spec.serving[0].name]


def _vip_answers(cluster: Cluster) -> bool:
    return cluster.vip.get(timeout=1).ok


def check_window(cluster: Cluster) -> float:
    """How long the checker may take to notice a real server change, with a margin."""
    return cluster.spec.web_service.check_window + 5


FAULTS = {f.name: f for f in (
    Fault("apache stop", _first_server, lambda m: m.systemctl("stop apache2"),
          lambda cluster, m: m.systemctl("start apache2"), check_window),
    # a power loss: QEMU killed; undone by powering it on (it boots from its own disk: step 7)
    Fault("director crash", _active, lambda m: m.crash(), lambda c, m: m.start(),
          lambda c: c.spec.failover.takeover_limit, _vip_answers, "the VIP answering again", TRANSFERS),
    # the same to the network, and back in ~15 s instead of a TCG boot's 100-150 (Cluster.revive)
    Fault("director hang", _active, lambda m: m.pause(), lambda c, m: c.revive(m),
          lambda c: c.spec.failover.takeover_limit, _vip_answers, "the VIP answering again", TRANSFERS),
    Fault("standby hang", _standby, lambda m: m.pause(), lambda c, m: c.revive(m),
          lambda c: c.spec.failover.past_verdict),
    # heard on the link, the standby must take nothing over
    Fault("standby LAN cut", _standby, lambda m: m.block(LAN), lambda c, m: m.unblock(LAN),
          lambda c: c.spec.failover.deadtime_s * 2 + 5),
    # ipfail's rule: the active that lost the ping node hands the VIP to its peer
    Fault("active LAN cut", _active, lambda m: m.block(LAN), lambda c, m: m.unblock(LAN),
          lambda c: c.spec.failover.takeover_limit, _vip_answers, "the VIP answering again"),
    # every cable of the standby, held past both verdicts: both believe they are alone
    Fault("partition", _standby, lambda m: m.block(), lambda c, m: m.unblock(),
          lambda c: c.spec.failover.settle_limit, lambda c: c.settled(), "both directors settled"),
)}


class InFlight:
    """`count` slow downloads of the blob through a service's VIP (the web service's unless
    named), started before a fault: they must end complete and byte-exact after it (the standby
    holds their connections: IPVS sync)."""

    def __init__(self, cluster: Cluster, count: int = TRANSFERS, rate: str = "40k",
                 service: profile.Service | None = None, blob: bytes | None = None):
        """`blob`: the bytes an earlier InFlight put in place (rewriting the file would cut the
        downloads already reading it)."""
        self.cluster, self.count = cluster, count
        self.service = service or cluster.spec.web_service
        self.blob = blob or cluster.put_blob()
        client = cluster.client(self.service)
        self.transfers = client.downloads("/blob.txt", count, rate)
        segment = client.segment
        source = segment.client_address6 if client.host.version == 6 else segment.client_address
        assert source, f"{client.host}: the lab's client has no address of its family"
        self.source = ip_address(source)
        self.vip = client.host

    def synced(self, standby: Machine, timeout: float = 20) -> list[str]:
        """The standby's IPVS entries for these downloads, once it holds all of them."""
        source = f" {render.bracketed(self.source)}:"

        def mine() -> list[str] | None:
            found = [e for e in self.cluster.sync_entries(standby, self.service)
                     if "ESTABLISHED" in e and source in f" {e}"]
            return found if len(found) >= self.count else None
        return wait.until(mine, timeout, f"{standby.name}'s IPVS table to hold the {self.count} transfers "
                                         f"to {self.vip}")

    def in_flight(self) -> list[int]:
        """Bytes so far per download; each strictly between none and all (else not in flight)."""
        now = self.transfers.bytes_so_far()
        assert all(0 < b < len(self.blob) for b in now), f"not in flight: {now} of {len(self.blob)} bytes"
        return now

    def broken(self, timeout: float) -> list[tuple[int, str, int]]:
        """(curl's exit, what it said, bytes) of each download that did not end byte-exact."""
        return [(code, said, len(data)) for code, said, data in self.transfers.finish(timeout)
                if code != 0 or data != self.blob]
