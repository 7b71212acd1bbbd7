"""`appliance status`: what this node is doing, in one screen, fast enough to type twice.

Read from what is already there rather than asked afresh: the HA watchdog's last probe
(HAWATCH_HEALTH: the stack's state, answered or hung, a second VIP holder), node.json, and
three quick kernel reads (addresses, the IPVS table with its counters, the sync daemons).
`--json` prints the same for `python -m builder status`, which gathers every node's over SSH.

    appliance status          # a table for people
    appliance status --json   # one JSON object
"""
from __future__ import annotations

import json
import sys
import time
from collections import namedtuple
from pathlib import Path

from builder import contract as c
from firstboot import state as applied

# Named tuples, not dataclasses: importing dataclasses (and inspect with it) and building
# three classes took a fifth of a second under TCG, and `appliance status` must answer in < 1 s.
RealServer = namedtuple("RealServer", "address port weight active inactive")
VirtualService = namedtuple("VirtualService", "protocol vip port scheduler real_servers", defaults=((),))
Status = namedtuple("Status", "node role address stack state answering second_holder health_age "
                    "peer_heard_age vips services sync synced_connections",
                    defaults=(None, "", None, None, None, None, (), (), (), 0))
Status.__doc__ = """state: the watchdog's last word (MASTER, BACKUP, all, none, HUNG...); second_holder:
another MAC answering for a VIP this node holds; health_age, peer_heard_age: seconds since the
watchdog's last probe, since the peer director was last heard."""


def service_dict(v: VirtualService) -> dict:
    return {**v._asdict(), "real_servers": [r._asdict() for r in v.real_servers]}


def as_dict(s: Status) -> dict:
    """The JSON shape `builder status` reads."""
    return {**s._asdict(), "services": [service_dict(v) for v in s.services]}


def parse_ipvs(text: str) -> list[VirtualService]:
    """`ipvsadm -L -n` as virtual services with their real servers (weight, connections)."""
    services: list[VirtualService] = []
    current: dict | None = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] in (["TCP"], ["UDP"], ["FWM"]) and len(words) >= 3:
            if current:
                services.append(VirtualService(**current))
            # a port group's service is its firewall mark: "FWM  1 wrr"
            vip, _, port = (words[1], "", "0") if words[0] == "FWM" else words[1].rpartition(":")
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


def from_proc(text: str) -> str:
    """/proc/net/ip_vs in `ipvsadm -L -n`'s words: its IPv4 endpoints are hex (AC142864:0050),
    its IPv6 ones written out in full with a hex port ([2001:0db8:...:0100]:0050)."""
    hexdigits = "0123456789ABCDEFabcdef"

    def word(w: str) -> str:
        if w.startswith("[") and "]:" in w:
            host, _, port = w[1:].partition("]:")
            if len(port) != 4 or not all(ch in hexdigits for ch in port):
                return w
            from ipaddress import IPv6Address
            return f"[{IPv6Address(host).compressed}]:{int(port, 16)}"
        host, _, port = w.partition(":")
        if len(host) != 8 or len(port) != 4 or not all(ch in hexdigits for ch in host + port):
            return w
        return ".".join(str(int(host[i:i + 2], 16)) for i in range(0, 8, 2)) + f":{int(port, 16)}"
    return "\n".join(" ".join(word(w) for w in line.split()) if line.strip() else line
                     for line in text.splitlines())


_THREAD_NAMES: dict[Path, str] = {}  # /proc/PID of each kernel thread seen -> its name


def sync_threads(proc: Path = Path("/proc")) -> list[str]:
    """The IPVS sync daemons running, from their kernel threads' names (ipvs-m:..., ipvs-b:...):
    no ipvsadm to start, which costs a tenth of a second each under TCG. Kernel threads are
    kthreadd's (PID 2) children and a PID keeps its name, so each name is read once: the
    watchdog asks every second, and a read of every /proc/PID/comm took half a second of a TCG
    director's CPU each time."""
    try:
        pids = (proc / "2/task/2/children").read_text().split()
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: every process
        pids = [p.name for p in proc.iterdir() if p.name.isdigit()]
    names = {}
    for pid in pids:
        path = proc / pid
        if (name := _THREAD_NAMES.get(path)) is None:
            try:
                name = (path / "comm").read_text()
            except OSError:
                continue  # gone meanwhile
        if not name.startswith("kthreadd"):  # a thread being created has its parent's name until named
            names[path] = name
    for gone in _THREAD_NAMES.keys() - names.keys():
        if gone.parent == proc:
            del _THREAD_NAMES[gone]
    _THREAD_NAMES.update(names)
    found = {"master" if n.startswith("ipvs-m:") else "backup" for n in names.values()
             if n.startswith(("ipvs-m:", "ipvs-b:"))}
    return [d for d in ("master", "backup") if d in found]


def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def ipvs_connections() -> int:
    """The connections in this director's IPVS table, its own and those synchronised to it."""
    return max(0, len(read("/proc/net/ip_vs_conn").splitlines()) - 1)


def is_local(address: str) -> bool:
    """The kernel lets a socket bind only to a local address (ip_nonlocal_bind 0, as here)."""
    import socket
    with socket.socket(socket.AF_INET6 if c.is_ipv6(address) else socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
            return True
        except OSError:
            return False


NONLOCAL_BIND = "/proc/sys/net/ipv4/ip_nonlocal_bind"


def held_vips(info: dict) -> list[str]:
    """The VIPs this director holds now (none on a real server: node.json lists no VIP), each a
    local address a socket can bind to; a director carries a VIP only on its cluster NIC. No
    `ip` process: the watchdog asks every second, `appliance status` must answer in < 1 s."""
    if not info.get("vips"):
        return []
    if read(NONLOCAL_BIND).strip() != "0":  # binding anywhere allowed: ask the NIC
        out = _ip("-o", "addr", "show", "dev", info["interface"])
        return [v for v in info["vips"] if f" {v}/" in out]
    return [v for v in info["vips"] if is_local(v)]


def _ip(*args: str) -> str:
    import subprocess
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=3, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def lo_vips() -> list[str]:
    """A real server's VIPs: the /32s and /128s on its loopback (`ip`, the one process status
    starts), not the loopback's own."""
    out = _ip("-o", "addr", "show", "dev", "lo")
    return sorted({w.split("/")[0] for w in out.split() if (w.endswith("/32") or w.endswith("/128"))
                   and not w.startswith("127.") and w != "::1/128"})


def gather(state_dir: Path = Path(c.STATE_DIR)) -> Status:
    info = applied.node(state_dir)
    base = {"node": info["node"], "role": info["role"], "address": info["address"], "stack": info.get("stack")}
    if info["role"] != "director":
        return Status(**base, vips=lo_vips())
    found: dict = {"state": "no watchdog report"}
    try:
        health = json.loads(Path(c.HAWATCH_HEALTH).read_text())
        found = {"state": health.get("state", ""), "answering": health.get("answering"),
                 "second_holder": health.get("duplicate"), "health_age": time.time() - health.get("checked", 0)}
        if health.get("peer_heard_at"):
            found["peer_heard_age"] = time.time() - health["peer_heard_at"]
    except (OSError, ValueError):
        pass
    # the kernel's own files, not three ipvsadm runs: `appliance status` must answer in < 1 s
    return Status(**base, **found, vips=held_vips(info),
                  services=parse_ipvs(from_proc(read("/proc/net/ip_vs"))), sync=sync_threads(),
                  synced_connections=ipvs_connections())


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
            lines.append(f"  {v.protocol} {v.vip if v.protocol == 'FWM' else f'{v.vip}:{v.port}'} {v.scheduler}")
            for r in v.real_servers:
                state = "quiesced" if r.weight == 0 else f"weight {r.weight}"
                lines.append(f"    {r.address}:{r.port:<6} {state:<10} {r.active} active, {r.inactive} inactive")
    else:
        lines.append(f"  VIP on lo: {', '.join(s.vips) or 'none'}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    s = gather()
    print(json.dumps(as_dict(s)) if argv == ["--json"] else table(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
