"""What `apply` would change on a running cluster: the profile it runs against a new one.

Pure: two validated Clusters in, a list of Changes out, each saying whether it can be made
live (no reboot, no dropped connection: ldirectord or keepalived re-reads its file; a removed
real server is drained first) or only by `apply --reboot` (re-seeding one node at a time),
and why. Keys are the profile's own (real servers by name, services by protocol/port and their
own VIP), so the plan reads like the profile diff an operator made.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from builder.profile import Cluster, Service, _settings

# what the checkers and IPVS take from a re-read file without a restart
LIVE_SERVICE_KEYS = {"scheduler", "checkinterval", "checktimeout", "checktype", "service", "request",
                     "receive", "check_content", "fallback", "quiescent", "virtualhost", "persistent"}
# what each refused section would need, said once
WHY = {
    "name": "the cluster's name is in every node's instance-id and secret file",
    "vip": "the VIP is held by the directors' stack and on every real server's lo",
    "domain": "host names are written at first boot",
    "stack": "the HA stack is chosen at first boot",
    "network": "node addresses and routes are set at first boot",
    "link": "the dedicated link's addresses are set at first boot",
    "directors": "a director's identity (name, address, link) is its seed's",
    "heartbeat": "heartbeat reads ha.cf and its secret only when it starts: a restart is a failover",
    "vrrp": "VRRP timing and priorities take a keepalived restart: a failover",
    "real_server_address": "a real server's address is its seed's: remove it and add it again under "
                           "its new address",
}


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    live: bool
    why: str = ""

    def __str__(self) -> str:
        what = ("added" if self.old is None else "removed" if self.new is None
                else f"{self.old!r} -> {self.new!r}")
        return f"{self.key}: {what}" + ("" if self.live else f" (needs --reboot: {self.why})")


def _table(obj: Any, role: str | None = None) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in _settings(type(obj), role)}


def service_key(s: Service) -> str:
    """How the plan names a service: protocol/port (or port+port for a group), @VIP if its own."""
    return f"{s.protocol}/{'+'.join(map(str, s.group))}" + (f"@{s.vip}" if s.vip else "")


def flatten(c: Cluster) -> dict[tuple[str, ...], Any]:
    """Every setting of a cluster under the key an operator would name it by, as its parts
    (section, item, setting): an address in a key has dots of its own."""
    out: dict[tuple[str, ...], Any] = {}
    for k, v in _table(c).items():
        out[(k,)] = v
    for section in ("network", "heartbeat", "vrrp", "access", "metrics", "logging"):
        for k, v in _table(getattr(c, section)).items():
            if section != "access" or k == "ssh_keys":
                out[(section, k)] = v
    if c.link:
        out.update({("link", k): v for k, v in _table(c.link).items()})
    for d in c.directors:
        out.update({("directors", d.name, k): v for k, v in _table(d, "director").items() if k != "name"})
    for r in c.real_servers:
        out[("real_servers", r.name)] = r.address
        out.update({("real_servers", r.name, k): v for k, v in _table(r, "realserver").items()
                    if k not in ("name", "address")})
    for s in c.services:
        name = service_key(s)
        out[("services", name)] = True
        out.update({("services", name, f.name): getattr(s, f.name) for f in fields(s)
                    if "read" in f.metadata and f.name not in ("port", "ports", "protocol", "vip")})
    return out


def _classify(parts: tuple[str, ...], old: Any, new: Any) -> tuple[bool, str]:
    if parts[0] == "real_servers":
        if len(parts) == 2 and old is not None and new is not None:
            return False, WHY["real_server_address"]
        if len(parts) == 2 or parts[2] == "weight":
            return True, ""
        return False, "a real server's NIC is its seed's"
    if parts[0] == "services":
        return (True, "") if len(parts) == 2 or parts[2] in LIVE_SERVICE_KEYS else (False, "set at first boot")
    if parts == ("access", "ssh_keys") or parts[0] in ("metrics", "logging"):  # files and a reload or (re)start
        return True, ""
    return False, WHY.get(parts[0], "set at first boot")


def diff(old: Cluster, new: Cluster) -> list[Change]:
    """Every setting that differs, in the profile's order, live or not."""
    a, b = flatten(old), flatten(new)
    moved_vips = set(old.vips) ^ set(new.vips)  # a VIP the pair did not carry, or no longer will
    on_moved = {service_key(s) for c in (old, new) for s in c.services if s.vip in moved_vips}
    changes = []
    for parts in dict.fromkeys([*a, *b]):
        if a.get(parts) == b.get(parts):
            continue
        parent = parts[:2]
        if parts != parent and (parent in a) != (parent in b):
            continue  # a setting of a real server or service added or removed as a whole
        live, why = _classify(parts, a.get(parts), b.get(parts))
        if parts[0] == "services" and parts[1] in on_moved:
            live, why = False, WHY["vip"]
        changes.append(Change(".".join(parts), a.get(parts), b.get(parts), live, why))
    return changes


def drained(old: Cluster, new: Cluster) -> list[str]:
    """The real servers to drain (weight 0 until their connections end) before removal."""
    keep = {r.name for r in new.real_servers}
    return [r.name for r in old.real_servers if r.name not in keep]


def refusal(changes: list[Change]) -> str | None:
    """One message naming every change that cannot be made live, or None."""
    refused = [c for c in changes if not c.live]
    if not refused:
        return None
    return ("cannot change live: " + "; ".join(str(c) for c in refused)
            + ". `apply --reboot` re-seeds and reboots one node at a time, the standby first")
