"""What the cluster exists for, measured: requests through each VIP against the same requests
straight to one real server, in one run (`make bench DATAPLANE=1`). wrk from the lab's client
inside the namespace, at a few connection counts, IPv4 and IPv6 where the profile has both.

Bounded: each point runs SECONDS; the connection counts are fixed. Under TCG the figures say how
much the director's forwarding adds on top of a real server's own time, not what hardware does.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from builder import contract
from builder.errors import LabError
from lab.client import Client
from lab.cluster import Cluster

CONNECTIONS = (1, 4, 16)
SECONDS = 10
PINGS = 100  # per hop: where the time goes (one TCG guest's round trip), 20 ms apart
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


class WrkError(LabError):
    """wrk printed no figures (it could not connect): its output says why."""


@dataclass(frozen=True)
class Point:
    target: str          # "VIP 172.20.40.100:80", "direct app1 172.20.40.21:80"
    family: str          # "IPv4" | "IPv6"
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int          # socket errors and answers other than 2xx/3xx


def parse(text: str) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors) from wrk's --latency output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    quantiles = {q: float(v) * UNITS[u] for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", text, re.M)}
    if not rps or set(quantiles) != {"50", "99"}:
        raise WrkError(text.strip().splitlines()[-1] if text.strip() else "wrk printed nothing")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return float(rps.group(1)), quantiles["50"], quantiles["99"], errors + (int(bad.group(1)) if bad else 0)


def argv(url: str, connections: int, seconds: int = SECONDS) -> list[str]:
    return ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "--timeout", "5s", url]


def measure(client: Client, target: str, connections: int, seconds: int = SECONDS) -> Point:
    out = client.segment.run(*argv(client.url("/"), connections, seconds), check=False, timeout=seconds + 30)
    rps, p50, p99, errors = parse(out.stdout + out.stderr)
    return Point(target, "IPv6" if client.host.version == 6 else "IPv4", connections, rps, p50, p99, errors)


def targets(cluster: Cluster) -> list[tuple[str, Client]]:
    """Each VIP of the profile (one port each), then its first real server straight, per family."""
    spec = cluster.spec
    # plain HTTP on every VIP, a TLS group's other port too: against the direct figure (port 80)
    found = [("VIP", cluster.client(service, next((p for p in service.group if p != contract.TLS_PORT), None)))
             for service in spec.services]
    real, port, segment = spec.real_servers[0], spec.web_service.port, cluster.segment
    assert segment is not None, "the cluster is not booted"
    found += [(f"direct {real.name}", Client(segment, address, port)) for address in (real.address, real.address6)
              if address is not None and any(v.version == address.version for v in spec.vips)]
    # named by where they point: the URL without its scheme and path ("[2001:db8:40::100]")
    return [(f"{kind} {client.url('').split('://', 1)[1]}", client) for kind, client in found]


def ping_p50(text: str) -> float:
    """The median round trip (ms) of ping's per-reply lines; raises if none came back."""
    times = sorted(float(t) for t in re.findall(r"time=([\d.]+) ms", text))
    if not times:
        raise LabError(f"ping had no reply: {text.strip().splitlines()[-1] if text.strip() else 'no output'}")
    return times[len(times) // 2]


def hops(cluster: Cluster, count: int = PINGS) -> dict[str, float]:
    """Where a VIP's extra time goes: the median ping round trip from the client to the active
    director and to the direct figure's real server, per family. A request through a VIP crosses
    the director once (in and out of its NIC, as a ping does) before the real server's own path,
    so VIP p50 - direct p50 near the director's round trip means the cost is that TCG guest's
    packet path, not IPVS's lookup."""
    spec, segment, active = cluster.spec, cluster.segment, cluster.active_director()
    assert segment is not None, "the cluster is not booted"
    director, real = spec.node(active.name), spec.real_servers[0]
    found = {}
    for family, pairs in (("IPv4", ((director.name, director.address), (real.name, real.address))),
                          ("IPv6", ((director.name, director.address6), (real.name, real.address6)))):
        for name, address in pairs:
            if address is not None and any(v.version == address.version for v in spec.vips):
                out = segment.run("ping", "-n", "-c", str(count), "-i", "0.02", "-W", "1", str(address),
                                  check=False, timeout=count + 10)
                found[f"{family} {name}"] = ping_p50(out.stdout + out.stderr)
    return found


def table(points: list[Point]) -> list[str]:
    """Per family and connection count: each VIP against the direct figure, p50 ratio last."""
    lines = ["| family | conns | target | req/s | p50 ms | p99 ms | errors | p50 VIP/direct |", "|---" * 8 + "|"]
    for p in points:
        direct = next((d for d in points if d.target.startswith("direct") and d.family == p.family
                       and d.connections == p.connections), None)
        ratio = f"{p.p50_ms / direct.p50_ms:.2f}" if direct and p is not direct and direct.p50_ms else ""
        lines.append(f"| {p.family} | {p.connections} | {p.target} | {p.rps:.0f} | {p.p50_ms:.2f} | "
                     f"{p.p99_ms:.2f} | {p.errors} | {ratio} |")
    return lines


def dataplane_profile(profile_path: Path, accel: str, seconds: float, out: Path) -> dict:
    """Boot the profile's cluster; wrk each target at each connection count, the VIP and the
    direct figure of one count one after the other (the same minute of the host's time)."""
    name = profile_path.stem
    points: list[Point] = []
    with Cluster(profile_path, out / "cluster" / name, accel) as cluster:
        cluster.wait_all_serving(300)
        cluster.wait_settled(300)
        found = targets(cluster)
        real_servers = {n.name for n in cluster.spec.serving}
        for target, client in found:  # a VIP on its fallback page would measure the director's Apache
            served = {client.get().server for _ in range(len(real_servers) + 1)}
            if not served <= real_servers:
                raise LabError(f"{target} answered from {sorted(map(str, served - real_servers))}, not only "
                               f"from real servers {sorted(real_servers)}: no figures for it")
        for _, client in found:  # warm every path (ARP and neighbour caches, Apache's workers) first
            client.segment.run(*argv(client.url("/"), 4, 2), check=False, timeout=40)
        for connections in CONNECTIONS:
            for target, client in found:
                point = measure(client, target, connections, int(seconds))
                points.append(point)
                print(f"[{name}] {point.family} {connections} conns {target}: {point.rps:.0f} req/s, "
                      f"p50 {point.p50_ms:.2f} ms, p99 {point.p99_ms:.2f} ms, {point.errors} errors", flush=True)
        rtt = hops(cluster)
    print("\n".join(f"[{name}] {line}" for line in table(points)), flush=True)
    print(f"[{name}] ping p50 from the client (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in rtt.items()), flush=True)
    return {"profile": name, "seconds": seconds, "points": [asdict(p) for p in points], "ping_p50_ms": rtt}
