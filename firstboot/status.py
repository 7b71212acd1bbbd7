"""`appliance status`: what this node is doing, in one screen, fast enough to type twice.

Read from what is already there rather than asked afresh: the HA watchdog's last probe
(HAWATCH_HEALTH: the stack's state, answered or hung, a second VIP holder), node.json, and
three quick kernel reads (addresses, the IPVS table with its counters, the sync daemons).
`--json` prints the same for `python -m builder status`, which gathers every node's over SSH.

    appliance status          # a table for people
    appliance status --json   # one JSON object
"""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder import contract as c
from firstboot import state as applied


@dataclass(frozen=True)
class RealServer:
    address: str
    port: int
    weight: int
    active: int
    inactive: int


@dataclass(frozen=True)
class VirtualService:
    protocol: str
    vip: str
    port: int
    scheduler: str
    real_servers: tuple[RealServer, ...] = ()


def parse_ipvs(text: str) -> list[VirtualService]:
    """`ipvsadm -L -n` as virtual services with their real servers (weight, connections)."""
    services: list[VirtualService] = []
    current: dict | None = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] in (["TCP"], ["UDP"], ["FWM"]) and len(words) >= 3:
            if current:
                services.append(VirtualService(**current))
            vip, _, port = words[1].rpartition(":")
            current = {"protocol": words[0], "vip": vip, "port": int(port) if port.isdigit() else 0,
                       "scheduler": words[2], "real_servers": ()}
        elif words[:1] == ["->"] and current is not None and len(words) >= 6 and words[1] != "RemoteAddress:Port":
            address, _, port = words[1].rpartition(":")
            current["real_servers"] += (RealServer(address, int(port), int(words[3]), int(words[4]), int(words[5])),)
    if current:
        services.append(VirtualService(**current))
    return services


def parse_sync(text: str) -> list[str]:
    """`ipvsadm -L --daemon`: the sync daemons running ("master", "backup")."""
    return [w for line in text.splitlines() for w in line.split()[:1] if w in ("master", "backup")]


HEX_ENDPOINT = re.compile(r"^([0-9A-F]{8}):([0-9A-F]{4})$")


def from_proc(text: str) -> str:
    """/proc/net/ip_vs in `ipvsadm -L -n`'s words: its IPv4 endpoints are hex (AC142864:0050)."""
    def word(w: str) -> str:
        m = HEX_ENDPOINT.match(w)
        return f"{ipaddress.IPv4Address(int(m.group(1), 16))}:{int(m.group(2), 16)}" if m else w
    return "\n".join(" ".join(word(w) for w in line.split()) if line.strip() else line
                     for line in text.splitlines())


def sync_threads(proc: Path = Path("/proc")) -> list[str]:
    """The IPVS sync daemons running, from their kernel threads' names (ipvs-m:..., ipvs-b:...):
    no ipvsadm to start, which costs a tenth of a second each under TCG."""
    found = set()
    for comm in proc.glob("[0-9]*/comm"):
        try:
            name = comm.read_text()
        except OSError:
            continue
        if name.startswith("ipvs-m:"):
            found.add("master")
        elif name.startswith("ipvs-b:"):
            found.add("backup")
    return [d for d in ("master", "backup") if d in found]


def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def ipvs_connections() -> int:
    """The connections in this director's IPVS table, its own and those synchronised to it."""
    return max(0, len(read("/proc/net/ip_vs_conn").splitlines()) - 1)


def run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=3, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


@dataclass
class Status:
    node: str
    role: str
    address: str
    stack: str | None = None
    state: str = ""                  # the watchdog's last word: MASTER, BACKUP, all, none, HUNG...
    answering: bool | None = None
    second_holder: str | None = None  # another MAC answering for a VIP this node holds
    health_age: float | None = None  # seconds since the watchdog's last probe
    peer_heard_age: float | None = None  # seconds since the peer director was last heard
    vips: list[str] = field(default_factory=list)
    services: list[VirtualService] = field(default_factory=list)
    sync: list[str] = field(default_factory=list)
    synced_connections: int = 0


def gather(state_dir: Path = Path(c.STATE_DIR)) -> Status:
    info = json.loads(applied.under(state_dir, c.NODE_JSON).read_text())
    s = Status(info["node"], info["role"], info["address"], info.get("stack"))
    addrs = run(["ip", "-o", "addr", "show"])
    wanted = info.get("vips", [])
    if s.role == "director":
        try:
            health = json.loads(Path(c.HAWATCH_HEALTH).read_text())
            s.state, s.answering = health.get("state", ""), health.get("answering")
            s.second_holder, s.health_age = health.get("duplicate"), time.time() - health.get("checked", 0)
            if health.get("peer_heard_at"):
                s.peer_heard_age = time.time() - health["peer_heard_at"]
        except (OSError, ValueError):
            s.state = "no watchdog report"
        # the kernel's own files, not three ipvsadm runs: `appliance status` must answer in < 1 s
        s.services = parse_ipvs(from_proc(read("/proc/net/ip_vs")))
        s.sync = sync_threads()
        s.synced_connections = ipvs_connections()
    s.vips = [v for v in wanted if f" {v}/" in addrs] if wanted else \
        sorted({w.split("/")[0] for line in addrs.splitlines() if " lo " in line
                for w in line.split() if "/32" in w and not w.startswith("127.")})
    return s


def table(s: Status) -> str:
    """The report for people: a few lines, then one line per real server."""
    lines = [f"{s.node} ({s.role}, {s.address})"]
    if s.role == "director":
        hung = " NOT ANSWERING" if s.answering is False else ""
        age = f", checked {s.health_age:.0f} s ago" if s.health_age is not None else ""
        heard = ("peer never heard since the watchdog started" if s.peer_heard_age is None
                 else f"peer last heard {s.peer_heard_age:.0f} s ago")
        lines.append(f"  {s.stack}: {s.state}{hung}{age}; {heard}")
        lines.append(f"  holds: {', '.join(s.vips) or 'no VIP'}"
                     + (f"  (ALSO HELD BY {s.second_holder})" if s.second_holder else ""))
        lines.append(f"  sync daemons: {', '.join(s.sync) or 'none'}; {s.synced_connections} connections in IPVS")
        for v in s.services:
            lines.append(f"  {v.protocol} {v.vip}:{v.port} {v.scheduler}")
            for r in v.real_servers:
                state = "quiesced" if r.weight == 0 else f"weight {r.weight}"
                lines.append(f"    {r.address}:{r.port:<6} {state:<10} {r.active} active, {r.inactive} inactive")
    else:
        lines.append(f"  VIP on lo: {', '.join(s.vips) or 'none'}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    s = gather()
    print(json.dumps(asdict(s)) if argv == ["--json"] else table(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
