"""What the cluster exists for, measured: requests through each VIP against the same requests
straight to one real server, in one run (`make bench DATAPLANE=1`). wrk from the lab's client
inside the namespace, at a few connection counts, IPv4 and IPv6 where the profile has both.

Bounded: each point runs SECONDS; the connection counts are fixed. Under TCG the figures say how
much the director's forwarding adds on top of a real server's own time, not what hardware does.
"""
from __future__ import annotations

import re
import signal
import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from builder import contract
from builder.errors import LabError
from lab.client import Client
from lab.cluster import Cluster

CONNECTIONS = (1, 4, 16)
SECONDS = 10
TRACE_SECONDS = 5  # wrk at one connection under tcpdump, per traced target
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


def family(client: Client) -> str:
    return "IPv6" if client.host.version == 6 else "IPv4"


def measure(client: Client, target: str, connections: int, seconds: int = SECONDS) -> Point:
    out = client.segment.run(*argv(client.url("/"), connections, seconds), check=False, timeout=seconds + 30)
    rps, p50, p99, errors = parse(out.stdout + out.stderr)
    return Point(target, family(client), connections, rps, p50, p99, errors)


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


# tcpdump -r F -tt -n -S: "<epoch> IP[6] <src>.<port> > <dst>.<port>: Flags [P.], seq A:B, ack C, ..."
SEGMENT = re.compile(r"^(\d+\.\d+) IP6? (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[[^]]*\], seq (\d+):(\d+), ack (\d+)",
                     re.M)
LEGS = ("to the director", "in the director", "director to real server", "in the real server",
        "real server to client", "client to real server")


def sightings(text: str, port: int) -> dict[tuple[str, str], list[float]]:
    """One capture's data segments of a keep-alive HTTP exchange, by request: ("req", key) for
    each request and ("resp", key) for the response that acknowledges it (key: the client's port
    and the request's end sequence number, so that a response is matched to its request), each
    with the times it passed, in order (the director's tap sees a request twice: in, then out)."""
    seen: dict[tuple[str, str], list[float]] = {}
    for m in SEGMENT.finditer(text):
        t, sport, dport, end, ack = float(m[1]), int(m[3]), int(m[5]), m[7], m[8]
        if dport == port:
            seen.setdefault(("req", f"{sport}/{end}"), []).append(t)
        elif sport == port:
            seen.setdefault(("resp", f"{dport}/{ack}"), []).append(t)
    return seen


def legs(client: dict, real: dict, director: dict | None = None) -> dict[str, float]:
    """Median milliseconds per leg of a request's round trip, from the captures on the client's
    bridge, the real servers' taps and (through a VIP) the active director's tap: `sightings`
    of each. Only requests seen at every point count; "requests" says how many did."""
    per: dict[str, list[float]] = {}
    for (kind, key), sent in client.items():
        done = client.get(("resp", key))
        if kind != "req" or not done or ("req", key) not in real or ("resp", key) not in real:
            continue
        t_sent, t_back, t_rs_in, t_rs_out = sent[0], done[0], real[("req", key)][0], real[("resp", key)][0]
        times = {"round trip": t_back - t_sent, "in the real server": t_rs_out - t_rs_in,
                 "real server to client": t_back - t_rs_out}
        if director is not None:
            through = director.get(("req", key), [])
            if len(through) < 2:
                continue
            times |= {"to the director": through[0] - t_sent, "in the director": through[-1] - through[0],
                      "director to real server": t_rs_in - through[-1]}
        else:
            times["client to real server"] = t_rs_in - t_sent
        for leg, seconds in times.items():
            per.setdefault(leg, []).append(seconds * 1000)
    found = {leg: statistics.median(v) for leg, v in per.items()}
    return found | {"requests": float(len(per.get("round trip", [])))}


def capture(cluster: Cluster, client: Client, via_director: bool, seconds: int, out: Path) -> dict[str, float]:
    """wrk at one connection while tcpdump records the client's bridge, every real server's LAN
    tap and (through a VIP) the active director's: `legs` of what it saw."""
    from lab import faults, net
    segment = cluster.segment
    assert segment is not None, "the cluster is not booted"
    machines = {r.name: cluster[r.name] for r in cluster.spec.serving}
    if via_director:
        machines["director"] = cluster.active_director()
    points = {"client": net.LAN} | {name: vm.nics[faults.LAN].tap or "" for name, vm in machines.items()}
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.pcap" for name in points}
    dumps = [subprocess.Popen(["ip", "netns", "exec", segment.netns, "tcpdump", "-i", tap, "-w", str(files[name]),
                               "-U", "-s", "128", "-n", "tcp", "port", str(client.port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name, tap in points.items()]
    try:
        for dump in dumps:  # recording before the first request
            assert dump.stderr is not None
            dump.stderr.readline()
        measure(client, "traced", 1, seconds)
    finally:
        for dump in dumps:
            dump.send_signal(signal.SIGINT)
            dump.wait(timeout=30)
    seen = {name: sightings(subprocess.run(["tcpdump", "-r", str(f), "-tt", "-n", "-S"], capture_output=True,
                                           text=True, check=False, timeout=120).stdout, client.port)
            for name, f in files.items()}
    real: dict[tuple[str, str], list[float]] = {}
    for r in cluster.spec.serving:
        real |= seen[r.name]
    # Apache ends a keep-alive connection after 100 requests and IPVS places the next one, so
    # through a VIP every real server may serve some (the direct figure is the first one's)
    served = {r.name: sum(kind == "req" for kind, _ in seen[r.name]) for r in cluster.spec.serving}
    print(f"  traced {client.url('/')}: requests seen by " + ", ".join(f"{n} {c}" for n, c in served.items()),
          flush=True)
    return legs(seen["client"], real, seen.get("director"))


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
        traced: dict[str, dict[str, float]] = {}
        for target, client in found:  # where a request's time goes, per family: the first VIP and direct
            kind = f"{family(client)} {target.split()[0]}"
            if kind not in traced:
                traced[kind] = capture(cluster, client, target.startswith("VIP"), TRACE_SECONDS,
                                       out / "trace" / name / kind.replace(" ", "-"))
    print("\n".join(f"[{name}] {line}" for line in table(points)), flush=True)
    print(f"[{name}] ping p50 from the client (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in rtt.items()), flush=True)
    for line in legs_table(traced):
        print(f"[{name}] {line}", flush=True)
    return {"profile": name, "seconds": seconds, "points": [asdict(p) for p in points], "ping_p50_ms": rtt,
            "legs_ms": traced}


def legs_table(traced: dict[str, dict[str, float]]) -> list[str]:
    """One column per traced run (IPv4 VIP, IPv4 direct, ...), one row per leg: medians in ms."""
    if not traced:
        return []
    rows = ["round trip", *LEGS, "requests"]
    lines = ["| leg (median ms) | " + " | ".join(traced) + " |", "|---" * (len(traced) + 1) + "|"]
    for row in rows:
        cells = [f"{t[row]:.0f}" if row == "requests" else f"{t[row]:.3f}" if row in t else "" for t in traced.values()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines
