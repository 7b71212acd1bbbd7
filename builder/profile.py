"""Load a cluster profile, validate it once, and model it as frozen dataclasses.

Every problem found is collected and reported together (``ProfileError``), each message
naming the field and what to fix. This module only needs the standard library: it also
runs inside the images at first boot, reading the cluster back from the seed ISO.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq")
CHECKTYPES = ("negotiate", "connect", "ping", "on", "off")
NEGOTIATE_SERVICES = ("http", "https")
PROTOCOLS = ("tcp", "udp")
AUTH_METHODS = ("sha1", "md5", "crc")
LDIRECTORD_MODES = ("active", "both")
TAKEOVERS = ("heartbeat", "fast")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
DIRECTOR, REALSERVER = "director", "realserver"


class ProfileError(ValueError):
    """A profile has one or more problems; ``problems`` lists them all."""

    def __init__(self, problems: list[str], source: str = "profile"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s):\n" +
                         "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Node:
    name: str
    address: IPv4Address
    role: str
    weight: int = 1

    @property
    def is_director(self) -> bool:
        return self.role == DIRECTOR


@dataclass(frozen=True)
class Network:
    subnet: IPv4Network
    interface: str = "eth0"
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    broadcast: IPv4Address | None = None

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    @property
    def broadcast_address(self) -> IPv4Address:
        return self.broadcast or self.subnet.broadcast_address


@dataclass(frozen=True)
class Service:
    port: int = 80
    protocol: str = "tcp"
    scheduler: str = "rr"
    checktype: str = "negotiate"
    service: str = "http"
    request: str = "ldirector.html"
    receive: str = "Test Page"
    check_content: str = ""
    checkinterval: int = 2
    checktimeout: int = 10
    quiescent: bool = True
    fallback: str | None = "127.0.0.1:80"

    @property
    def page_content(self) -> str:
        """What the real servers' check page holds (defaults to the receive string)."""
        return self.check_content or self.receive


@dataclass(frozen=True)
class Heartbeat:
    auth: str = "sha1"
    secret_file: str | None = None
    bcast: bool = True
    mcast_group: IPv4Address | None = None
    port: int = 694
    mcast_ttl: int = 1
    auto_failback: bool = False
    # seconds; fractions become milliseconds in ha.cf ("keepalive 500ms")
    keepalive: float | None = None
    deadtime: float | None = None
    warntime: float | None = None
    initdead: float | None = None
    ping_nodes: tuple[IPv4Address, ...] = ()
    logfacility: str = "local0"
    # "active": heartbeat starts ldirectord with the VIP (the howto); "both": ldirectord runs on
    # both directors all the time, so a takeover only has to move the VIP (faster failover)
    ldirectord: str = "active"
    # "heartbeat": its resource scripts move the VIP (IPaddr2, the howto); "fast": the image's
    # lean VIPaddr script, started by vip-takeover the moment heartbeat declares the peer dead
    takeover: str = "heartbeat"


@dataclass(frozen=True)
class Cluster:
    name: str
    domain: str
    network: Network
    vip: IPv4Address
    directors: tuple[Node, ...]
    real_servers: tuple[Node, ...]
    services: tuple[Service, ...] = (Service(),)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.directors + self.real_servers

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in cluster {self.name!r} "
                       f"(nodes: {', '.join(n.name for n in self.nodes)})")


# --- reading -----------------------------------------------------------------------------

class _Table:
    """Reads typed fields from one TOML table, recording problems instead of raising."""

    def __init__(self, problems: list[str], where: str, data: Any, keyed: bool = True):
        self.problems, self.where, self.keyed = problems, where, keyed
        self.data = data if isinstance(data, dict) else {}
        self.seen: set[str] = set()
        if not isinstance(data, dict):
            self.error(f"must be a table, not {type(data).__name__}")

    def error(self, message: str, key: str | None = None) -> None:
        if not self.keyed:  # node problems read "loadb1: address ..." as operators name nodes
            key = None
        where = f"{self.where}.{key}" if key and self.where else (key or self.where)
        self.problems.append(f"{where}: {message}" if where else message)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., ) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                self.error("is required", key)
                return None
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds).replace("str", "string")
            self.error(f"must be a {names}, not {value!r}", key)
            return None if default is ... else default
        return value

    def in_range(self, key: str, low: int, high: int, default: Any = ...) -> int | None:
        value = self.get(key, int, default)
        if value is not None and not low <= value <= high:
            self.error(f"{value} is out of range ({low}..{high})", key)
            return None
        return value

    def seconds(self, key: str, low: float, high: float) -> float | None:
        """An optional duration in seconds; heartbeat counts in milliseconds."""
        value = self.get(key, (int, float), None)
        if value is not None and not low <= value <= high:
            self.error(f"{value} s is out of range ({low}..{high} s)", key)
            return None
        if value is not None and abs(value * 1000 - round(value * 1000)) > 1e-6:
            self.error(f"{value} s is finer than heartbeat's milliseconds", key)
            return None
        return value

    def one_of(self, key: str, choices: tuple[str, ...], default: Any = ..., what: str = "") -> str | None:
        value = self.get(key, str, default)
        if value is not None and value not in choices:
            self.error(f"{value!r} is not {what or 'allowed'} (one of {', '.join(choices)})", key)
            return None
        return value

    def ipv4(self, key: str, default: Any = ...) -> IPv4Address | None:
        value = self.get(key, str, default)
        return None if value is None else self.parse_ipv4(value, key)

    def parse_ipv4(self, value: str, key: str) -> IPv4Address | None:
        try:
            return IPv4Address(value)
        except ValueError:
            self.error(f"address {value} is not an IPv4 address", key)
            return None

    def done(self) -> None:
        for key in sorted(set(self.data) - self.seen):
            hint = _closest(key, self.seen)
            self.error(f"unknown key {key!r}{f' (did you mean {hint!r}?)' if hint else ''}", key)


def _closest(word: str, candidates: set[str]) -> str | None:
    import difflib
    match = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return match[0] if match else None


def _read_nodes(problems: list[str], data: Any, key: str, role: str) -> list[Node]:
    if not isinstance(data, list):
        problems.append(f"{key}: must be an array of tables ([[{key}]])")
        return []
    nodes = []
    for i, item in enumerate(data):
        label = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else f"{key}[{i}]"
        t = _Table(problems, label, item, keyed=False)
        name = t.get("name", str)
        address = t.ipv4("address")
        weight = t.in_range("weight", 0, 65535, 1) if role == REALSERVER else 1
        t.done()
        if name is not None and not HOSTNAME_RE.match(name):
            if "." in name:
                t.error(f"name {name!r} is a domain name; use the short host name "
                        "(it becomes the hostname heartbeat matches against `uname -n`) "
                        "and put the domain in `domain`")
            else:
                t.error(f"name {name!r} is not a valid host name "
                        "(letters, digits and '-', at most 63, not starting or ending with '-')")
        if name is not None and address is not None:
            nodes.append(Node(name=name, address=address, role=role, weight=weight or 0))
    return nodes


def _read_network(problems: list[str], data: Any) -> Network | None:
    t = _Table(problems, "network", data)
    subnet_text = t.get("subnet", str)
    interface = t.get("interface", str, "eth0")
    gateway = t.ipv4("gateway", None)
    broadcast = t.ipv4("broadcast", None)
    dns_list = t.get("dns", list, [])
    dns = tuple(a for a in (t.parse_ipv4(str(x), "dns") for x in dns_list) if a)
    t.done()
    subnet = None
    if subnet_text is not None:
        try:
            subnet = IPv4Network(subnet_text)
        except ValueError as e:
            t.error(f"{subnet_text!r} is not an IPv4 network like 192.168.0.0/24 ({e})", "subnet")
    if interface is not None and not re.match(r"^[a-zA-Z0-9_.-]{1,15}$", interface):
        t.error(f"{interface!r} is not a network interface name", "interface")
    if subnet is None:
        return None
    if subnet.prefixlen > 30:
        t.error(f"/{subnet.prefixlen} is too small for four hosts and a VIP", "subnet")
    if gateway is not None and gateway not in subnet:
        t.error(f"{gateway} is outside the subnet {subnet}", "gateway")
    if broadcast is not None and broadcast != subnet.broadcast_address:
        t.error(f"{broadcast} is not the broadcast address of {subnet} "
                f"({subnet.broadcast_address}); remove it or fix it", "broadcast")
    return Network(subnet=subnet, interface=interface or "eth0", gateway=gateway, dns=dns,
                   broadcast=broadcast)


def _read_service(problems: list[str], i: int, data: Any) -> Service | None:
    t = _Table(problems, f"services[{i}]", data)
    d = Service()
    s = dict(
        port=t.in_range("port", 1, 65535, d.port),
        protocol=t.one_of("protocol", PROTOCOLS, d.protocol, "a protocol"),
        scheduler=t.one_of("scheduler", SCHEDULERS, d.scheduler, "an IPVS scheduler"),
        checktype=t.one_of("checktype", CHECKTYPES, d.checktype, "an ldirectord checktype"),
        service=t.get("service", str, d.service),
        request=t.get("request", str, d.request),
        receive=t.get("receive", str, d.receive),
        check_content=t.get("check_content", str, ""),
        checkinterval=t.in_range("checkinterval", 1, 3600, d.checkinterval),
        checktimeout=t.in_range("checktimeout", 1, 3600, d.checktimeout),
        quiescent=t.get("quiescent", bool, d.quiescent),
        fallback=t.get("fallback", str, d.fallback) or None,
    )
    t.done()
    if s["checktype"] == "negotiate":
        if s["service"] not in NEGOTIATE_SERVICES:
            t.error(f"{s['service']!r} cannot be negotiated (one of {', '.join(NEGOTIATE_SERVICES)})",
                    "service")
        if not s["receive"]:
            t.error("must not be empty: ldirectord looks for this text in the check page", "receive")
        if not s["request"] or "/" in s["request"].lstrip("/") or s["request"].startswith("/"):
            t.error(f"{s['request']!r} must be a file name in the document root, "
                    "like ldirector.html", "request")
    if s["fallback"] is not None:
        host, _, port = s["fallback"].rpartition(":")
        try:
            local = IPv4Address(host).is_loopback
        except ValueError:
            local = False
        if not local or not port.isdigit() or not 1 <= int(port) <= 65535:
            t.error(f"{s['fallback']!r} must be a local address with a port, like 127.0.0.1:80 "
                    "(the director serves the fallback page itself)", "fallback")
    if any(v is None for k, v in s.items() if k != "fallback"):
        return None
    return Service(**s)


def _read_heartbeat(problems: list[str], data: Any) -> Heartbeat | None:
    t = _Table(problems, "heartbeat", data)
    d = Heartbeat()
    mcast = t.ipv4("mcast_group", None)
    ping = t.get("ping_nodes", list, [])
    h = dict(
        auth=t.one_of("auth", AUTH_METHODS, d.auth, "a heartbeat auth method"),
        secret_file=t.get("secret_file", str, None),
        bcast=t.get("bcast", bool, d.bcast),
        port=t.in_range("port", 1, 65535, d.port),
        mcast_ttl=t.in_range("mcast_ttl", 1, 255, d.mcast_ttl),
        auto_failback=t.get("auto_failback", bool, d.auto_failback),
        keepalive=t.seconds("keepalive", 0.1, 3600),
        deadtime=t.seconds("deadtime", 0.1, 3600),
        warntime=t.seconds("warntime", 0.1, 3600),
        initdead=t.seconds("initdead", 0.1, 3600),
        logfacility=t.get("logfacility", str, d.logfacility),
        ldirectord=t.one_of("ldirectord", LDIRECTORD_MODES, d.ldirectord, "where ldirectord runs"),
        takeover=t.one_of("takeover", TAKEOVERS, d.takeover, "a way to take over the VIP"),
    )
    t.done()
    if mcast is not None and not mcast.is_multicast:
        t.error(f"{mcast} is not a multicast group (224.0.0.0/4)", "mcast_group")
    if not h["bcast"] and mcast is None:
        t.error("heartbeat needs a path: set bcast = true or an mcast_group", "bcast")
    if h["auth"] == "crc":
        t.error("crc is not authentication; use sha1 (or md5)", "auth")
    keepalive = h["keepalive"] or 1
    deadtime = h["deadtime"] or 30
    if h["deadtime"] is not None and deadtime <= 2 * keepalive:
        t.error(f"deadtime {deadtime} must be more than twice keepalive {keepalive}", "deadtime")
    if h["warntime"] is not None and not keepalive < h["warntime"] < deadtime:
        t.error(f"warntime {h['warntime']} must lie between keepalive {keepalive} "
                f"and deadtime {deadtime}", "warntime")
    if h["initdead"] is not None and h["initdead"] < deadtime:
        t.error(f"initdead {h['initdead']} must be at least deadtime {deadtime}", "initdead")
    if h["takeover"] == "fast" and h["ldirectord"] != "both":
        t.error('"fast" needs ldirectord = "both": the VIP would answer before ldirectord '
                "has loaded the IPVS table", "takeover")
    pings = tuple(a for a in (t.parse_ipv4(str(x), "ping_nodes") for x in ping) if a)
    required = ("auth", "bcast", "port", "mcast_ttl", "auto_failback", "ldirectord", "takeover")
    if any(h[k] is None for k in required):
        return None
    return Heartbeat(mcast_group=mcast, ping_nodes=pings, **h)


def parse(data: dict[str, Any], source: str = "profile") -> Cluster:
    """Validate a profile mapping (from TOML or the seed's JSON) into a Cluster."""
    problems: list[str] = []
    top = _Table(problems, "", data)
    name = top.get("name", str)
    domain = top.get("domain", str, "localdomain")
    vip = top.ipv4("vip")
    network = _read_network(problems, top.get("network", dict, ...) or {})
    directors = _read_nodes(problems, top.get("directors", list, []), "directors", DIRECTOR)
    real_servers = _read_nodes(problems, top.get("real_servers", list, []), "real_servers", REALSERVER)
    service_data = top.get("services", list, [{}])
    services = [_read_service(problems, i, s) for i, s in enumerate(service_data)]
    heartbeat = _read_heartbeat(problems, top.get("heartbeat", dict, {}))
    top.done()

    if name is not None and not HOSTNAME_RE.match(name):
        top.error(f"{name!r} is not a valid cluster name (letters, digits and '-')", "name")
    if domain is not None and not all(HOSTNAME_RE.match(p) for p in domain.split(".")):
        top.error(f"{domain!r} is not a valid DNS domain", "domain")
    # count what was given, not what parsed: a bad entry is reported once, by itself
    given = {k: len(v) if isinstance(v, list) else None for k in ("directors", "real_servers")
             for v in [data.get(k, [])]}
    if given["directors"] is not None and given["directors"] != 2:
        top.error(f"a heartbeat pair needs exactly two directors, found {given['directors']}", "directors")
    if given["real_servers"] is not None and given["real_servers"] < 2:
        top.error(f"at least two real servers are needed, found {given['real_servers']}", "real_servers")
    if not service_data:
        top.error("at least one virtual service is needed", "services")
    # ldirectord.cf sets these once, globally: differing values would be silently lost
    for key in ("checkinterval", "checktimeout", "quiescent"):
        values = [getattr(s, key) for s in services if s]
        if len(set(values)) > 1:
            top.error(f"{key} differs between services ({', '.join(map(str, values))}); "
                      "ldirectord applies one value to all: use the same in every service",
                      "services")
    ports = [(s.protocol, s.port) for s in services if s]
    for dup in sorted({p for p in ports if ports.count(p) > 1}):
        top.error(f"{dup[0]} port {dup[1]} is defined twice", "services")

    nodes = directors + real_servers
    for label, items in (("name", [n.name.lower() for n in nodes]),
                         ("address", [str(n.address) for n in nodes])):
        for dup in sorted({x for x in items if items.count(x) > 1}):
            top.error(f"duplicate node {label} {dup}", "directors/real_servers")
    if network is not None:
        subnet = network.subnet
        reserved = {subnet.network_address, subnet.broadcast_address}
        for n in nodes:
            if n.address not in subnet:
                problems.append(f"{n.name}: address {n.address} is outside the subnet {subnet}")
            elif n.address in reserved:
                problems.append(f"{n.name}: address {n.address} is the network or broadcast address")
        if vip is not None:
            if vip not in subnet:
                top.error(f"{vip} is outside the subnet {subnet}: the directors must answer ARP for it",
                          "vip")
            elif vip in reserved:
                top.error(f"{vip} is the network or broadcast address of {subnet}", "vip")
            if network.gateway == vip:
                top.error(f"{vip} is also the gateway", "vip")
    for n in nodes:
        if vip is not None and n.address == vip:
            top.error(f"{vip} is also the address of {n.name}; the VIP must be its own address", "vip")

    if problems:
        raise ProfileError(problems, source)
    return Cluster(name=name, domain=domain, network=network, vip=vip,
                   directors=tuple(directors), real_servers=tuple(real_servers),
                   services=tuple(services), heartbeat=heartbeat)


def load(path: str | Path) -> Cluster:
    """Read and validate a TOML profile file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ProfileError([f"cannot read the profile: {e.strerror}"], str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError([f"not valid TOML: {e}"], str(path)) from None
    return parse(data, str(path))


def to_dict(cluster: Cluster) -> dict[str, Any]:
    """The profile mapping for a Cluster: ``parse(to_dict(c)) == c`` (used for seeds)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (IPv4Address, IPv4Network)):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    def table(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        return {k: plain(v) for k, v in vars(obj).items() if v is not None and k not in skip}

    return {
        "name": cluster.name,
        "domain": cluster.domain,
        "vip": str(cluster.vip),
        "network": table(cluster.network),
        "directors": [table(n, ("role", "weight")) for n in cluster.directors],
        "real_servers": [table(n, ("role",)) for n in cluster.real_servers],
        "services": [table(s) for s in cluster.services],
        # the secret file is a host path: the seed carries the secret itself instead
        "heartbeat": table(cluster.heartbeat, ("secret_file",)),
    }


def traps(cluster: Cluster) -> list[str]:
    """Valid but almost certainly wrong: the howto's own pitfalls, reported by ``lint``."""
    found = []
    for i, s in enumerate(cluster.services):
        if s.checktype == "negotiate" and s.receive not in s.page_content:
            found.append(f"services[{i}].check_content: the check page holds {s.page_content!r}, "
                         f"which does not contain receive={s.receive!r}: every health check "
                         "would fail and all traffic would go to the fallback")
    for n in cluster.nodes:
        if n.name != n.name.lower():
            found.append(f"{n.name}: heartbeat node names must equal `uname -n` exactly; "
                         "use a lower-case name")
    if all(n.weight == 0 for n in cluster.real_servers):
        found.append("real_servers: every weight is 0, so no real server gets traffic")
    return found
