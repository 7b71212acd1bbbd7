"""Forced dual-master events: both directors claim the VIP, then the pair is left to heal.

A transient dual master is ordinary (a director stalled under load, a link that drops a few
adverts, both booting at once); a permanent one is the failure (docs/split-brain.md). Each
event here makes one on purpose and measures how long the pair takes to come back to exactly
one VIP holder with both stacks answering:

- ``pause``: the active director's CPUs stop until its peer has taken the VIP, then go on at
  once: the old active still believes it is MASTER/active while the new one has just started
  its sync master. That is the moment that hung keepalived's VRRP process.
- ``link``: (profiles with a dedicated link) the link's switch port drops every frame of the
  active director (its carrier stays up: a pulled cable would be a FAULT, not a dual master)
  until the standby has taken the VIP over, then forwards again: both hold the VIP, and the one
  that loses the election goes back within moments of becoming MASTER. keepalived only:
  heartbeat also talks on the LAN, so a silent link is not a dual master there.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from lab import wait
from lab.machine import Machine

LINK = 1  # NIC 1 is the dedicated link


@dataclass(frozen=True)
class Event:
    how: str
    victim: str           # the director paused or cut
    both_held: bool       # both directors held the VIP at once (a real dual master)
    converged: float      # seconds from the fault's end to one VIP holder
    holder: str           # who holds it once both stacks answer too
    waited: float = 0.0   # seconds the pair took to be ready for this event (the last one's aftermath)


def methods(cluster) -> tuple[str, ...]:
    """The ways this profile's pair can be driven into a dual master."""
    return ("pause", "link") if cluster.spec.link and cluster.spec.keepalived else ("pause",)


def one_holder_answering(cluster, down: frozenset[str] = frozenset()) -> Machine | None:
    """The one director holding the VIPs (every one of them), when every director's stack
    answers; else None. Directors named in `down` (crashed, hung on purpose) are left out."""
    holders = [d for d in cluster.vip_holders() if d.name not in down]
    up = [d for d in cluster.directors if d.name not in down]
    if len(holders) != 1 or not cluster.holds_every_vip(holders[0]) or not all(cluster.stack.answers(d) for d in up):
        return None
    return holders[0]


def dual_master(cluster, how: str, limit: float) -> Event:
    """One forced dual-master event; raises wait.Timeout if the pair has not healed in `limit` s.
    It starts once the pair is ready for it (Cluster.ready_for_fault): the last event's step-out
    may have restarted a stack, which takes no VIP over before its first verdict, and a heartbeat
    left in "transition" is the watchdog's to restart (after its vacancy limit): that, a restart
    and a first verdict may pass before the pair is ready (the wait is printed, never hidden)."""
    waited = cluster.wait_ready_for_fault()
    active = cluster.active_director()
    standby = cluster.standby_of(active)
    faults = {"pause": (active.pause, active.resume),
              "link": (lambda: active.drop(LINK), lambda: active.undrop(LINK))}
    if how not in faults:
        raise ValueError(f"unknown dual-master method {how!r}: one of {', '.join(faults)}")
    inject, restore = faults[how]
    inject()
    try:
        wait.until(lambda: cluster.holds_vip(standby), cluster.spec.failover.takeover_limit,
                   f"{standby.name} to take the VIP", interval=0.2)
        # paused while holding the VIP, it still holds it when it goes on; a silent link tells
        # it nothing wrong, so it keeps the VIP (asked while the fault lasts)
        both = how == "pause" or cluster.holds_vip(active)
    finally:
        restore()
    ended = time.monotonic()
    wait.until(lambda: len(cluster.vip_holders()) == 1, limit, "one VIP holder", interval=0.2)
    converged = time.monotonic() - ended
    holder = wait.until(lambda: one_holder_answering(cluster), limit,
                        "one VIP holder with both stacks answering", interval=0.5)
    return Event(how, active.name, both, converged, holder.name, waited)


def summary(events: list[Event]) -> str:
    took = [e.converged for e in events]
    return (f"{len(events)} dual-master events ({sum(e.both_held for e in events)} with both holding "
            f"the VIP): converged in median {statistics.median(took):.1f} s, max {max(took):.1f} s")
