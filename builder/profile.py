"""Load a cluster profile, validate it once, and model it as frozen dataclasses.

Each key is declared once (see "the settings table"); values derived from several keys --
heartbeat's effective deadtime, the health-check window, how long a takeover may take -- are
properties of the model, so templates, first boot, the lab and the tests read the same figure.

Every problem found is collected and reported together (``ProfileError``), each message
naming the field and what to fix. This module only needs the standard library: it also
runs inside the images at first boot, reading the cluster back from the seed ISO.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any

from builder import contract, sshkeys
from builder.errors import ApplianceError

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq")
CHECKTYPES = ("negotiate", "connect", "ping", "on", "off")
NEGOTIATE_SERVICES = ("http", "https")
PROTOCOLS = ("tcp", "udp")
AUTH_METHODS = ("sha1", "md5", "crc")
LDIRECTORD_MODES = ("active", "both")
TAKEOVERS = ("heartbeat", "fast")
STACKS = ("heartbeat", "keepalived")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
DIRECTOR, REALSERVER = "director", "realserver"
GLOBAL_CHECK_KEYS = ("checkinterval", "checktimeout", "quiescent")  # one value in ldirectord.cf
ROLE_NAMES = {DIRECTOR: "directors", REALSERVER: "real servers"}


class ProfileError(ApplianceError, ValueError):
    """A profile has one or more problems; ``problems`` lists them all."""

    def __init__(self, problems: list[str], source: str = "profile"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s):\n" +
                         "\n".join(f"  {p}" for p in problems),
                         hint="`python -m builder reference` lists every key, its default and its meaning")


# --- the settings table --------------------------------------------------------------------
# Each profile key is declared once, as a dataclass field: its default, how it is read and
# checked (a reader on _Table), and its help text. parse(), to_dict() and reference() (the
# README's profile reference) all walk these declarations. Checks that span several fields
# stay in parse() and the _check_* functions below.

Reader = Callable[["_Table", str, Any], Any]


def setting(default: Any, read: Reader, help: str, *, roles: tuple[str, ...] = (),
            seed: bool = True) -> Any:
    """A profile key. `roles`: only nodes of these roles have it; `seed=False`: a host-side
    value the seed does not carry."""
    meta = {"read": read, "help": help, "roles": roles, "seed": seed}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable default")
    return field(default=default, metadata=meta) if default is not ... else field(metadata=meta)


def text(t: _Table, key: str, default: Any) -> Any:
    return t.get(key, str, default)


def flag(t: _Table, key: str, default: Any) -> Any:
    return t.get(key, bool, default)


def integer(low: int, high: int) -> Reader:
    return lambda t, key, default: t.in_range(key, low, high, default)


def seconds(low: float, high: float) -> Reader:
    return lambda t, key, default: t.seconds(key, low, high)


def choice(choices: tuple[str, ...], what: str) -> Reader:
    return lambda t, key, default: t.one_of(key, choices, default, what)


def ipv4(t: _Table, key: str, default: Any) -> Any:
    return t.ipv4(key, default)


def ipv4_list(t: _Table, key: str, default: Any) -> Any:
    values = t.get(key, list, [])
    return tuple(a for a in (t.parse_ipv4(str(x), key) for x in values) if a)


def port_list(t: _Table, key: str, default: Any) -> Any:
    values = t.get(key, list, [])
    ports = []
    for x in values:
        if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= 65535:
            t.error(f"{x!r} is not a port (1-65535)", key)
        else:
            ports.append(x)
    return tuple(ports)


def _parsed(parse: Callable[[str], Any], what: str) -> Reader:
    """A reader of one address or network: `parse` raises ValueError on a bad one."""
    def read(t: _Table, key: str, default: Any) -> Any:
        value = t.get(key, str, default)
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as e:
            t.error(f"{value!r} is not {what} ({e})", key)
            return None
    return read


ipv4_network = _parsed(IPv4Network, "an IPv4 network like 192.168.0.0/24")
ipv6 = _parsed(IPv6Address, "an IPv6 address like 2001:db8:40::11")
ipv6_network = _parsed(IPv6Network, "an IPv6 prefix like 2001:db8:40::/64")
ip_any = _parsed(ip_address, "an IPv4 or IPv6 address like 192.168.0.106 or 2001:db8:40::100")


APACHE_EXPORTER_OFFSET = 17  # 9100 -> 9117: the two exporters' registered default ports
QUOTES = "\"'`"  # what ldirectord.cf and keepalived.conf cannot carry in a quoted or bare value
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def mac_address(t: _Table, key: str, default: Any) -> Any:
    value = t.get(key, str, default)
    if value is None:
        return None
    mac = value.lower().replace("-", ":")
    if not MAC_RE.match(mac):
        t.error(f"mac {value!r} is not a MAC address like 52:54:00:12:34:56", key)
        return None
    if int(mac[:2], 16) & 1:
        t.error(f"mac {value} is a multicast address; a NIC's own MAC has the lowest bit of "
                "its first octet clear", key)
        return None
    return mac


def optional_text(t: _Table, key: str, default: Any) -> Any:
    return t.get(key, str, default) or None  # "" switches it off


def text_list(t: _Table, key: str, default: Any) -> Any:
    values = t.get(key, list, [])
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        t.error(f"must be a list of strings, not {bad[0]!r}", key)
    return tuple(v for v in values if isinstance(v, str))


def _short(key_line: str) -> str:
    words = key_line.split()
    return " ".join([words[0], words[1][:12] + "..."] if len(words) > 1 else words[:1])


def ssh_key_list(t: _Table, key: str, default: Any) -> Any:
    keys = []
    for i, line in enumerate(text_list(t, key, default)):
        why = sshkeys.problem(line)
        if why:
            t.error(f"key {i + 1} ({_short(line)}): {why}", key)
        else:
            keys.append(" ".join(line.split()))
    return tuple(keys)


@dataclass(frozen=True)
class Node:
    name: str = setting(..., text, "short host name: `uname -n` and the heartbeat node name")
    address: IPv4Address = setting(..., ipv4, "the node's address on the cluster LAN")
    weight: int = setting(1, integer(0, 65535), "IPVS weight (0 takes it out of rotation)",
                          roles=(REALSERVER,))
    mac: str | None = setting(None, mac_address, "pin the cluster address to the NIC with this "
                              "MAC (servers with several NICs: eth0 is whichever enumerates first)")
    link_address: IPv4Address | None = setting(
        None, ipv4, "the director's address on the dedicated heartbeat link ([link])",
        roles=(DIRECTOR,))
    address6: IPv6Address | None = setting(None, ipv6, "the node's IPv6 address on the LAN, inside "
                                           "[network] prefix6 (every node has one on a dual-stack LAN)")
    role: str = DIRECTOR  # which array it came from, not a key

    @property
    def is_director(self) -> bool:
        return self.role == DIRECTOR


@dataclass(frozen=True)
class Network:
    subnet: IPv4Network = setting(..., ipv4_network, "the cluster LAN, e.g. 192.168.0.0/24")
    interface: str = setting("eth0", text, "the NIC name in the image (it boots with net.ifnames=0)")
    gateway: IPv4Address | None = setting(None, ipv4, "default route, inside the subnet")
    dns: tuple[IPv4Address, ...] = setting((), ipv4_list, "name servers for /etc/resolv.conf")
    broadcast: IPv4Address | None = setting(None, ipv4, "defaults to the subnet's")
    prefix6: IPv6Network | None = setting(None, ipv6_network, "the LAN's IPv6 prefix for a dual-stack "
                                          "cluster, e.g. 2001:db8:40::/64: nodes take address6 in it, "
                                          "services may have IPv6 VIPs")
    gateway6: IPv6Address | None = setting(None, ipv6, "IPv6 default route, inside prefix6")

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    @property
    def broadcast_address(self) -> IPv4Address:
        return self.broadcast or self.subnet.broadcast_address


@dataclass(frozen=True)
class Link:
    """A dedicated heartbeat link between the directors (a crossover cable): a second NIC on
    each, heartbeat on it too, and the IPVS connection sync on it instead of the LAN."""
    subnet: IPv4Network = setting(..., ipv4_network, "the link's own subnet, e.g. 10.255.0.0/30")
    interface: str = setting("eth1", text, "the second NIC's name in the image")


@dataclass(frozen=True)
class Service:
    vip: IPv4Address | IPv6Address | None = setting(
        None, ip_any, "this service's own VIP, IPv4 inside the subnet or IPv6 inside prefix6 "
        "(default: the cluster's vip)")
    port: int = setting(80, integer(1, 65535), "port on the VIP")
    ports: tuple[int, ...] = setting((), port_list, "a port group served as one instead of port, "
                                     "e.g. [80, 443]: one firewall-mark virtual service, so "
                                     "persistence holds across its ports; checks go to the first")
    persistent: int = setting(0, integer(0, 86400), "seconds a client stays on the real server "
                              "it reached first, across a group's ports (0: off)")
    protocol: str = setting("tcp", choice(PROTOCOLS, "a protocol"), "tcp | udp")
    scheduler: str = setting("rr", choice(SCHEDULERS, "an IPVS scheduler"),
                             "IPVS scheduler: " + " ".join(SCHEDULERS))
    checktype: str = setting("negotiate", choice(CHECKTYPES, "an ldirectord checktype"),
                             " | ".join(CHECKTYPES))
    service: str = setting("http", text, "what ldirectord negotiates: http | https")
    request: str = setting("ldirector.html", text, "check page, a file in each real server's document root")
    receive: str = setting("Test Page", text, "text ldirectord expects in the check page")
    check_content: str = setting("", text, "what the check page holds (default: receive)")
    checkinterval: int = setting(2, integer(1, 3600), "seconds between checks; same in every service")
    checktimeout: int = setting(10, integer(1, 3600), "seconds a check may take; same in every service")
    quiescent: bool = setting(True, flag, "a failed real server gets weight 0 rather than removed")
    fallback: str | None = setting("127.0.0.1:80", optional_text,
                                   "the director's own sorry page when no real server is up (\"\": none)")
    fwmark: int | None = None  # a port group's firewall mark (1, 2, ... in profile order): set by parse

    @property
    def group(self) -> tuple[int, ...]:
        """The ports this service answers on: its group, or its one port."""
        return self.ports or (self.port,)

    @property
    def check_port(self) -> int:
        return self.group[0]

    @property
    def page_content(self) -> str:
        """What the real servers' check page holds (defaults to the receive string)."""
        return self.check_content or self.receive

    @property
    def check_window(self) -> float:
        """How long ldirectord may take to notice a real server's change: a check interval
        for the next check, a timeout for it to fail."""
        return self.checkinterval + self.checktimeout


class _Limits:
    """How long the lab waits on a stack, from its deadtime: stated once for both stacks."""

    @property
    def deadtime_s(self) -> float:
        raise NotImplementedError

    @property
    def rejoin_limit(self) -> float:
        """How long a returning director may take to see its peer active again."""
        return self.deadtime_s * 3 + 60

    @property
    def past_verdict(self) -> float:
        """How long to hold a fault so that both sides have given their verdict on it."""
        return self.deadtime_s + 5

    @property
    def settle_limit(self) -> float:
        """How long a pair may take to settle after a partition heals (heartbeat v1 without the
        step-out: ~15 s giving up, initdead, a takeover)."""
        return self.deadtime_s * 4 + 180

    @property
    def vacancy_limit(self) -> float:
        """How long both directors may be up with neither holding the VIP before the HA watchdog
        restarts the stack that claims it: a takeover's own time limit."""
        return self.takeover_limit

    @property
    def takeover_limit(self) -> float:
        raise NotImplementedError

    @property
    def duplicate_limit(self) -> float:
        """How long both directors may answer ARP for the VIP before the HA watchdog makes one
        step out: past the stack's own convergence (a verdict, then a margin for TCG)."""
        return self.deadtime_s + 10

    @property
    def initdead_s(self) -> float:
        """How long a freshly started stack may take to give its first verdict on the peer."""
        return self.deadtime_s


@dataclass(frozen=True)
class Heartbeat(_Limits):
    auth: str = setting("sha1", choice(AUTH_METHODS, "a heartbeat auth method"), "sha1 | md5")
    secret_file: str | None = setting(None, text, "file with the secret, relative to the profile "
                                      "(default: generated into .secrets/NAME.authkey)", seed=False)
    bcast: bool = setting(True, flag, "heartbeat by broadcast on the LAN")
    mcast_group: IPv4Address | None = setting(None, ipv4, "a second path by multicast, e.g. 225.0.0.1")
    port: int = setting(694, integer(1, 65535), "heartbeat's UDP port")
    mcast_ttl: int = setting(1, integer(1, 255), "multicast TTL")
    auto_failback: bool = setting(False, flag, "the first director takes the VIP back when it returns")
    keepalive: float | None = setting(None, seconds(0.1, 3600), "seconds between heartbeats (default 1; 0.5 -> 500ms)")
    deadtime: float | None = setting(None, seconds(0.1, 3600),
                                     "seconds of silence before the peer is dead (default 30)")
    warntime: float | None = setting(None, seconds(0.1, 3600), "seconds of silence before a late-heartbeat warning")
    initdead: float | None = setting(None, seconds(0.1, 3600), "deadtime at boot, at least deadtime")
    ping_nodes: tuple[IPv4Address, ...] = setting(
        (), ipv4_list, "third parties (the gateway) ipfail pings: the director that loses them "
        "while its peer still reaches them hands the VIP over (needs a second path: [link])")
    deadping: float | None = setting(None, seconds(0.1, 3600),
                                     "seconds without a ping node's answer before it counts as dead")
    logfacility: str = setting("local0", text, "syslog facility")
    ldirectord: str = setting("active", choice(LDIRECTORD_MODES, "where ldirectord runs"),
                              '"active": heartbeat starts it with the VIP (the howto); "both": it '
                              "runs on both directors, a takeover moves the VIP only")
    takeover: str = setting("heartbeat", choice(TAKEOVERS, "a way to take over the VIP"),
                            '"heartbeat": its resource scripts move the VIP (IPaddr2); "fast": '
                            'vip-takeover adds it when the peer is declared dead and, with ping_nodes, '
                            'silences a director that reaches neither until one answers '
                            '(needs ldirectord = "both")')

    @property
    def keepalive_s(self) -> float:
        """The keepalive heartbeat uses (its default when the profile sets none)."""
        return self.keepalive or 1

    @property
    def deadtime_s(self) -> float:
        """The deadtime heartbeat uses: how long a dead peer goes unnoticed."""
        return self.deadtime or 30

    @property
    def initdead_s(self) -> float:
        """heartbeat's deadtime at start: initdead when set (at least deadtime), else deadtime."""
        return self.initdead or self.deadtime_s

    @property
    def fast_takeover(self) -> bool:
        """vip-takeover adds the VIP the moment heartbeat declares the peer dead (VIPaddr)."""
        return self.takeover == "fast"

    @property
    def ldirectord_on_both(self) -> bool:
        return self.ldirectord == "both"

    @property
    def balances_on_both(self) -> bool:
        """The standby's IPVS table is loaded before a takeover (the stack-neutral name)."""
        return self.ldirectord_on_both

    @property
    def takeover_limit(self) -> float:
        """How long a takeover may take before a test or the bench calls it failed: the verdict,
        then heartbeat's resource scripts (tens of seconds of shell under TCG)."""
        return self.deadtime_s * 4 + 60

    @property
    def take_first(self) -> str | None:
        """Run on the standby before hand_over, when it balances too (ldirectord on both): it adds
        and announces the VIPs at once, and the active drops them right after asking heartbeat
        to stand by; heartbeat's own release and takeover then find nothing left to move. Without
        it, requests failed for the seconds of shell in between (suite step 18: 40 of 17635)."""
        return f"{contract.APPLIANCE_CLI} take-vips" if self.ldirectord_on_both else None

    @property
    def hand_over(self) -> str:
        """Run on the active director: it gives every resource to its peer at once, no deadtime
        waited (hb_standby asks heartbeat and returns)."""
        standby = "/usr/share/heartbeat/hb_standby all"
        return f"{standby} && {contract.APPLIANCE_CLI} release-vips" if self.take_first else standby


@dataclass(frozen=True)
class Vrrp(_Limits):
    """keepalived's VRRP (stack = "keepalived"): the same failover decisions heartbeat makes,
    with the same meaning for auto_failback and ping_nodes."""
    advert_int: float | None = setting(None, seconds(0.01, 40.95), "seconds between VRRP adverts "
                                       "(default 1; VRRPv3: 0.01 steps; the master is dead after 3 "
                                       "of them and a skew; below 0.3 a busy host's VMs flap)")
    router_id: int = setting(51, integer(1, 255), "virtual_router_id: unique per VRRP group on the LAN")
    auto_failback: bool = setting(False, flag, "the first director takes the VIP back when it returns")
    ping_nodes: tuple[IPv4Address, ...] = setting(
        (), ipv4_list, "third parties (the gateway) each director pings: the one that reaches "
        "fewer than its peer hands the VIP over (ipfail's rule)")
    deadping: float | None = setting(None, seconds(0.1, 3600),
                                     "seconds without a ping node's answer before it counts as dead")

    @property
    def advert_s(self) -> float:
        return self.advert_int or 1

    @property
    def deadtime_s(self) -> float:
        """How long a dead master goes unnoticed: RFC 5798's Master_Down_Interval, three
        adverts plus the skew time (at most one advert)."""
        return round(3 * self.advert_s + (256 - 100) / 256 * self.advert_s, 3)

    @property
    def deadping_s(self) -> float:
        return self.deadping or 2

    balances_on_both = True  # keepalived's checkers run on both directors

    @property
    def takeover_limit(self) -> float:
        """keepalived adds the VIP in-process: the verdict plus a margin for a loaded host."""
        return self.deadtime_s * 4 + 30

    # the hand-over track file (keepalived.conf): FAULT, a priority-0 advert, the backup takes over
    # at once, and the IPVS table stays while the VIPs leave (a stop cleared both at once)
    hand_over = f"echo 1 > {contract.KEEPALIVED_HAND_OVER}"
    take_first = None


def ipv4_networks(t: _Table, key: str, default: Any) -> Any:
    """Addresses or networks ("192.168.0.50", "10.0.0.0/24"); a network with host bits is an error."""
    out = []
    for value in t.get(key, list, []):
        try:
            out.append(IPv4Network(str(value)))
        except ValueError as e:
            t.error(f"{value!r} is not an IPv4 address or network like 192.168.0.50 or 10.0.0.0/24 ({e})", key)
    return tuple(out)


@dataclass(frozen=True)
class Metrics:
    """Prometheus metrics on every node (README "Monitoring"): off unless the profile asks."""
    enabled: bool = setting(False, flag, "run node_exporter on every node (directors: its IPVS "
                            "collector and the HA stack's state; real servers: Apache's exporter too)")
    port: int = setting(9100, integer(1024, 65000), "node_exporter's port; Apache's exporter "
                        f"listens on port + {APACHE_EXPORTER_OFFSET}")
    scrapers: tuple[IPv4Network, ...] = setting(
        (), ipv4_networks, "the Prometheus servers (addresses or networks) allowed to scrape; the "
        "nodes drop every other source (nftables). Required when enabled")

    @property
    def apache_port(self) -> int:
        return self.port + APACHE_EXPORTER_OFFSET


def host_port(t: _Table, key: str, default: Any) -> Any:
    """"host:port" (an IPv4 address or a DNS name), or None."""
    value = t.get(key, str, default)
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or not all(
            HOSTNAME_RE.match(p) for p in host.split(".")):
        t.error(f"{value!r} is not host:port, e.g. \"192.168.0.50:19532\"", key)
        return None
    return value


@dataclass(frozen=True)
class Logging:
    """Logs off the box: every node's journal, sent as it is written (README "Monitoring")."""
    remote: str | None = setting(None, host_port, "host:port of a systemd-journal-remote receiver "
                                 "(HTTP); every node uploads its journal there (systemd-journal-upload)")


@dataclass(frozen=True)
class Access:
    """Operators' way in: key-only SSH as root on every node (docs: README "Day 2")."""
    ssh_keys: tuple[str, ...] = setting(
        (), ssh_key_list, "OpenSSH public keys (lines of id_ed25519.pub, authorized_keys) that may log "
        "in as root; none (the default): no sshd runs")
    ssh_key_files: tuple[str, ...] = setting(
        (), text_list, "files of such keys, relative to the profile; the builder reads them and the "
        "seed carries the keys", seed=False)

    @property
    def ssh(self) -> bool:
        return bool(self.ssh_keys)


@dataclass(frozen=True)
class Cluster:
    name: str = setting(..., text, "cluster name: seeds, the secret file and instance-ids use it")
    vip: IPv4Address = setting(..., ipv4, "the virtual IP clients connect to; inside the subnet")
    domain: str = setting("localdomain", text, "/etc/hosts gets NAME.DOMAIN and NAME")
    stack: str = setting("heartbeat", choice(STACKS, "a director stack"),
                         '"heartbeat": heartbeat + ldirectord (the howto); "keepalived": VRRP and '
                         "keepalived's own health checks and sync daemon, settings in [vrrp]")
    network: Network = None  # type: ignore[assignment]  # the tables: read by parse()
    link: Link | None = None
    directors: tuple[Node, ...] = ()
    real_servers: tuple[Node, ...] = ()
    services: tuple[Service, ...] = (Service(),)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    vrrp: Vrrp = field(default_factory=Vrrp)
    access: Access = field(default_factory=Access)
    metrics: Metrics = field(default_factory=Metrics)
    logging: Logging = field(default_factory=Logging)

    @property
    def failover(self) -> Heartbeat | Vrrp:
        """The chosen stack's failover settings: both answer deadtime_s, takeover_limit,
        rejoin_limit, auto_failback, ping_nodes, balances_on_both and hand_over."""
        return self.vrrp if self.keepalived else self.heartbeat

    @property
    def keepalived(self) -> bool:
        return self.stack == "keepalived"

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.directors + self.real_servers

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in cluster {self.name!r} "
                       f"(nodes: {', '.join(n.name for n in self.nodes)})")

    def peer(self, director: Node) -> Node:
        return next(d for d in self.directors if d != director)

    @property
    def sync_interface(self) -> str:
        """Where the IPVS connection sync runs: the dedicated link if there is one."""
        return self.link.interface if self.link else self.network.interface

    @property
    def sync_id(self) -> int:
        """The IPVS sync daemons' id, which a backup must share with its master: keepalived's
        VRRP router id (one per pair on a LAN), 0 on heartbeat as in the howto."""
        return self.vrrp.router_id if self.keepalived else 0

    def vip_of(self, service: Service) -> IPv4Address | IPv6Address:
        return service.vip or self.vip

    @property
    def vips(self) -> tuple[IPv4Address | IPv6Address, ...]:
        """Every VIP the pair carries, the cluster's own first, each once."""
        return tuple(dict.fromkeys([self.vip, *(s.vip for s in self.services if s.vip)]))

    @property
    def vips4(self) -> tuple[IPv4Address, ...]:
        return tuple(v for v in self.vips if isinstance(v, IPv4Address))

    @property
    def vips6(self) -> tuple[IPv6Address, ...]:
        return tuple(v for v in self.vips if isinstance(v, IPv6Address))

    @property
    def fwmark_services(self) -> tuple[Service, ...]:
        """The port groups: the directors mark their packets, IPVS balances the mark."""
        return tuple(s for s in self.services if s.fwmark)

    @property
    def serves_tls(self) -> bool:
        """The real servers answer TLS on contract.TLS_PORT: a TCP service's ports include it."""
        return any(s.protocol == "tcp" and contract.TLS_PORT in s.group for s in self.services)

    @property
    def web_service(self) -> Service:
        """The service a browser (and the tests) use: the first HTTP one."""
        return next((s for s in self.services if s.protocol == "tcp" and s.service == "http"),
                    self.services[0])

    @property
    def serving(self) -> tuple[Node, ...]:
        """The real servers that get traffic (weight above 0)."""
        return tuple(n for n in self.real_servers if n.weight > 0)

    @property
    def round(self) -> int:
        """Requests in one round of the web service's scheduler over the serving real servers:
        the weights' sum for wrr (IPVS's wrr repeats with that period), one each otherwise."""
        if self.web_service.scheduler == "wrr":
            return sum(n.weight for n in self.serving)
        return len(self.serving)


SECTIONS = (("", Cluster), ("network", Network), ("link", Link), ("directors/real_servers", Node),
            ("services", Service), ("heartbeat", Heartbeat), ("vrrp", Vrrp), ("access", Access),
            ("metrics", Metrics), ("logging", Logging))


def _settings(cls: type, role: str | None = None) -> list[Field]:
    return [f for f in fields(cls) if "read" in f.metadata
            and (role is None or not f.metadata["roles"] or role in f.metadata["roles"])]


def _read_settings(cls: type, t: _Table, role: str | None = None) -> dict[str, Any]:
    """Every declared key of cls from table t; problems are recorded in t."""
    return {f.name: f.metadata["read"](t, f.name, ... if f.default is MISSING else f.default)
            for f in _settings(cls, role)}


def reference() -> str:
    """The profile reference (Markdown), from the declarations: the README shows it."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for section, cls in SECTIONS:
        for f in _settings(cls):
            default = "required" if f.default is MISSING else (
                "none" if f.default in (None, (), "") else
                str(f.default).lower() if isinstance(f.default, bool) else repr(f.default))
            roles = " (real servers only)" if REALSERVER in f.metadata["roles"] else (
                " (directors only)" if f.metadata["roles"] else "")
            key = f"{section.split(' ')[0]}.{f.name}" if section else f.name
            lines.append(f"| `{key}` | {default} | {f.metadata['help']}{roles} |")
    return "\n".join(lines) + "\n"


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
        for text in (v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)):
            bad = next((c for c in text if not c.isprintable()), None)
            if bad is not None:  # every string lands in a config file, one setting per line
                self.error(f"{text!r} holds the control character {bad!r}: profile strings are one "
                           "line of printable text", key)
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
        name = item.get("name") if isinstance(item, dict) else None
        label = name if isinstance(name, str) else f"{key}[{i}]"
        t = _Table(problems, label, item, keyed=False)
        n = _read_settings(Node, t, role)
        for f in _settings(Node):
            if isinstance(item, dict) and f.name in item and f.name not in n:
                t.seen.add(f.name)
                owners = " and ".join(ROLE_NAMES[r] for r in f.metadata["roles"])
                t.error(f"{f.name}: only {owners} have it ({f.metadata['help']}); remove it here")
        t.done()
        name = n["name"]
        if name is not None and not HOSTNAME_RE.match(name):
            if "." in name:
                t.error(f"name {name!r} is a domain name; use the short host name "
                        "(it becomes the hostname heartbeat matches against `uname -n`) "
                        "and put the domain in `domain`")
            else:
                t.error(f"name {name!r} is not a valid host name "
                        "(letters, digits and '-', at most 63, not starting or ending with '-')")
        if name is not None and n["address"] is not None and n.get("weight", 1) is not None:
            nodes.append(Node(role=role, **n))
    return nodes


def _read_network(problems: list[str], data: Any) -> Network | None:
    t = _Table(problems, "network", data)
    n = _read_settings(Network, t)
    t.done()
    subnet, interface, gateway, broadcast = n["subnet"], n["interface"], n["gateway"], n["broadcast"]
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
    prefix6, gateway6 = n["prefix6"], n["gateway6"]
    if gateway6 is not None and (prefix6 is None or gateway6 not in prefix6):
        t.error(f"{gateway6} is outside prefix6 {prefix6}" if prefix6 else
                f"{gateway6} needs prefix6, the LAN's IPv6 prefix (e.g. 2001:db8:40::/64)", "gateway6")
    if prefix6 is not None and prefix6.prefixlen > 120:
        t.error(f"/{prefix6.prefixlen} is too small for the nodes and VIPs; a LAN is a /64", "prefix6")
    return Network(**{**n, "interface": interface or "eth0"})


def _read_link(problems: list[str], data: Any, network: Network | None) -> Link | None:
    t = _Table(problems, "link", data)
    k = _read_settings(Link, t)
    t.done()
    subnet, interface = k["subnet"], k["interface"]
    if interface is not None and not re.match(r"^[a-zA-Z0-9_.-]{1,15}$", interface):
        t.error(f"{interface!r} is not a network interface name", "interface")
    if network is not None and interface == network.interface:
        t.error(f"{interface} is the LAN's interface; the link needs a NIC of its own (e.g. eth1)",
                "interface")
    if subnet is not None and network is not None and subnet.overlaps(network.subnet):
        t.error(f"{subnet} overlaps the LAN subnet {network.subnet}: give the link a subnet "
                "of its own, e.g. 10.255.0.0/30", "subnet")
    if subnet is None or interface is None:
        return None
    return Link(subnet=subnet, interface=interface)


def _read_service(problems: list[str], i: int, data: Any) -> Service | None:
    t = _Table(problems, f"services[{i}]", data)
    s = _read_settings(Service, t)
    t.done()
    if s["ports"]:
        if isinstance(data, dict) and "port" in data:
            t.error("give port (one port) or ports (a group), not both", "ports")
        if len(set(s["ports"])) != len(s["ports"]) or len(s["ports"]) < 2:
            t.error(f"{list(s['ports'])}: a group needs two or more different ports "
                    "(one port: use port)", "ports")
    if s["persistent"] and s["scheduler"] in ("sh", "dh"):
        t.error(f"{s['scheduler']} already sends a client (sh) or destination (dh) to one real "
                "server; persistence adds nothing: use persistent = 0 or another scheduler", "persistent")
    if s["checktype"] == "negotiate":
        if s["service"] not in NEGOTIATE_SERVICES:
            t.error(f"{s['service']!r} cannot be negotiated (one of {', '.join(NEGOTIATE_SERVICES)})",
                    "service")
        if not s["receive"]:
            t.error("must not be empty: ldirectord looks for this text in the check page", "receive")
        if not s["request"] or "/" in s["request"].lstrip("/") or s["request"].startswith("/") \
                or any(c.isspace() or c in QUOTES for c in s["request"]):
            t.error(f"{s['request']!r} must be a file name in the document root, "
                    "like ldirector.html", "request")
        check_port = (s["ports"] or (s["port"],))[0]
        if s["protocol"] == "tcp" and (check_port == contract.TLS_PORT) != (s["service"] == "https"):
            t.error(f"checks go to port {check_port} (the group's first), and the real servers speak TLS "
                    f"on {contract.TLS_PORT} only: service = \"https\" with {contract.TLS_PORT} first, "
                    f"else \"http\" on another port", "service")
        if s["protocol"] == "udp":
            t.error(f"a negotiate check speaks {s['service']} over TCP: a UDP service needs "
                    'checktype = "ping", "connect", "on" or "off"', "checktype")
    for key in ("receive", "check_content"):  # ldirectord.cf quotes them: receive="..."
        if s[key] and any(c in QUOTES for c in s[key]):
            t.error(f"{s[key]!r} holds a quote, which ldirectord.cf cannot carry inside "
                    f'{key}="..."', key)
    if s["fallback"] is not None:
        host, _, port = s["fallback"].rpartition(":")
        try:
            local = IPv4Address(host).is_loopback
        except ValueError:
            local = False
        if not local or not port.isdigit() or not 1 <= int(port) <= 65535:
            t.error(f"{s['fallback']!r} must be a local address with a port, like 127.0.0.1:80 "
                    "(the director serves the fallback page itself)", "fallback")
        elif not s["ports"] and s["port"] is not None and int(port) != s["port"]:
            t.error(f"{s['fallback']!r} is on another port than the service ({s['port']}): direct "
                    "routing keeps the client's port, so the director cannot answer there; give "
                    f"fallback = \"{host}:{s['port']}\" with a server of yours on it, or \"\" for none",
                    "fallback")
    if any(v is None for k, v in s.items() if k not in ("fallback", "vip")):
        return None
    return Service(**s)


def _read_heartbeat(problems: list[str], data: Any) -> Heartbeat | None:
    t = _Table(problems, "heartbeat", data)
    h = _read_settings(Heartbeat, t)
    t.done()
    mcast = h["mcast_group"]
    if mcast is not None and not mcast.is_multicast:
        t.error(f"{mcast} is not a multicast group (224.0.0.0/4)", "mcast_group")
    if h["bcast"] is False and mcast is None:
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
    optional = ("secret_file", "mcast_group", "keepalive", "deadtime", "warntime", "initdead", "deadping")
    if h["deadping"] is not None and not h["ping_nodes"]:
        t.error("deadping needs ping_nodes", "deadping")
    if any(v is None for k, v in h.items() if k not in optional):
        return None
    return Heartbeat(**h)


def _read_vrrp(problems: list[str], data: Any) -> Vrrp | None:
    t = _Table(problems, "vrrp", data)
    v = _read_settings(Vrrp, t)
    t.done()
    if v["advert_int"] is not None and abs(v["advert_int"] * 100 - round(v["advert_int"] * 100)) > 1e-6:
        t.error(f"{v['advert_int']} s: VRRPv3 counts adverts in hundredths of a second", "advert_int")
        return None
    if v["deadping"] is not None and not v["ping_nodes"]:
        t.error("deadping needs ping_nodes", "deadping")
    if any(v[k] is None for k in ("router_id", "auto_failback")):
        return None
    return Vrrp(**v)


def _check_stack(top: _Table, stack: str | None, data: dict[str, Any],
                 services: list[Service | None]) -> None:
    """Each stack reads its own section: settings for the other one would be silently ignored."""
    if stack is None:
        return
    other = "heartbeat" if stack == "keepalived" else "vrrp"
    if isinstance(data.get(other), dict) and data[other]:
        keys = ", ".join(f"{other}.{k}" for k in data[other])
        top.error(f'{keys}: set for the {other} stack, but stack = "{stack}"; '
                  f'remove [{other}] or set stack = "{"keepalived" if other == "vrrp" else "heartbeat"}"',
                  "stack")
    if stack == "keepalived":
        for i, s in enumerate(services):
            if s is not None and s.checktype == "off":
                top.problems.append(f'services[{i}].checktype: "off" is ldirectord\'s; keepalived '
                                    'has no such check: use "on" (always up) or remove the real servers')


def parse(data: dict[str, Any], source: str = "profile") -> Cluster:
    """Validate a profile mapping (from TOML or the seed's JSON) into a Cluster."""
    problems: list[str] = []
    top = _Table(problems, "", data)
    scalars = _read_settings(Cluster, top)
    name, domain, vip = scalars["name"], scalars["domain"], scalars["vip"]
    network = _read_network(problems, top.get("network", dict, ...) or {})
    link_data = top.get("link", dict, None)
    link = _read_link(problems, link_data, network) if link_data is not None else None
    directors = _read_nodes(problems, top.get("directors", list, []), "directors", DIRECTOR)
    real_servers = _read_nodes(problems, top.get("real_servers", list, []), "real_servers", REALSERVER)
    service_data = top.get("services", list, [{}])
    services = [_read_service(problems, i, s) for i, s in enumerate(service_data)]
    heartbeat = _read_heartbeat(problems, top.get("heartbeat", dict, {}))
    vrrp = _read_vrrp(problems, top.get("vrrp", dict, {}))
    access_table = _Table(problems, "access", top.get("access", dict, {}))
    access = Access(**_read_settings(Access, access_table))
    access_table.done()
    metrics_table = _Table(problems, "metrics", top.get("metrics", dict, {}))
    metrics = Metrics(**_read_settings(Metrics, metrics_table))
    metrics_table.done()
    logging_table = _Table(problems, "logging", top.get("logging", dict, {}))
    logs = Logging(**_read_settings(Logging, logging_table))
    logging_table.done()
    if metrics.enabled and not metrics.scrapers:
        metrics_table.error("metrics are on but no scraper may read them: give your Prometheus "
                            'server\'s address, e.g. scrapers = ["192.168.0.50"]', "scrapers")
    taken = {s.port for s in services if s}
    for key, port in (("port", metrics.port), ("port", metrics.apache_port)):
        if metrics.enabled and port in taken:
            metrics_table.error(f"{port} is a virtual service's port; choose another port for the exporters", key)
    top.done()
    _check_stack(top, scalars["stack"], data, services)

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
    # ldirectord.cf sets these once, globally: a later service that does not give one takes
    # the first service's; differing values would be silently lost
    first = services[0] if services else None
    if first is not None:
        services = [replace(s, **{k: getattr(first, k) for k in GLOBAL_CHECK_KEYS
                                  if not (isinstance(raw, dict) and k in raw)}) if s and i else s
                    for i, (s, raw) in enumerate(zip(services, service_data, strict=True))]
    for key in GLOBAL_CHECK_KEYS:
        values = [getattr(s, key) for s in services if s]
        if len(set(values)) > 1:
            top.error(f"{key} differs between services ({', '.join(map(str, values))}); "
                      "ldirectord applies one value to all: use the same in every service",
                      "services")
    ports = [(s.protocol, str(s.vip or vip), p) for s in services if s for p in s.group]
    for protocol, address, port in sorted({p for p in ports if ports.count(p) > 1}):
        top.error(f"{protocol} port {port} on {address} is in two services: a VIP's port "
                  "belongs to one", "services")
    marks = iter(range(1, len(services) + 1))
    services = [replace(s, fwmark=next(marks)) if s and s.ports else s for s in services]

    nodes = directors + real_servers
    for label, items in (("name", [n.name.lower() for n in nodes]),
                         ("address", [str(n.address) for n in nodes]),
                         ("mac", [n.mac for n in nodes if n.mac])):
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
    _check_ipv6(problems, network, nodes)
    _check_service_vips(problems, services, network, nodes)
    _check_link(problems, link, link_data is not None, directors)
    pinned = [n.name for n in nodes if n.mac]
    if pinned and network is not None and re.fullmatch(r"eth\d+", network.interface):
        top.error(f"{network.interface} is a name the kernel gives to whichever NIC enumerates "
                  f"first, so it cannot be pinned to a MAC ({', '.join(pinned)}); name the "
                  'cluster NIC yourself, e.g. interface = "lan0"', "network.interface")
    failover = vrrp if scalars["stack"] == "keepalived" else heartbeat
    if failover is not None:
        section = "vrrp" if failover is vrrp else "heartbeat"
        lan = {n.address: n.name for n in nodes} | {vip: "the VIP"}
        lan |= {d.link_address: f"{d.name}'s link address" for d in directors if d.link_address}
        for p in failover.ping_nodes:
            if p in lan:
                top.error(f"{p} is {lan[p]}: a ping node must be a third party both directors "
                          "can reach, such as the gateway", f"{section}.ping_nodes")
            elif network is not None and p not in network.subnet and network.gateway is None:
                top.error(f"{p} is outside the subnet {network.subnet} and there is no gateway "
                          "to reach it", f"{section}.ping_nodes")

    if problems:
        raise ProfileError(problems, source)
    # no problem: every section read (a missing one was a problem)
    assert network is not None and heartbeat is not None and vrrp is not None
    return Cluster(name=name, domain=domain, stack=scalars["stack"], network=network, vip=vip,
                   link=link, directors=tuple(directors), real_servers=tuple(real_servers),
                   services=tuple(s for s in services if s is not None), heartbeat=heartbeat, vrrp=vrrp,
                   access=access, metrics=metrics, logging=logs)


def _check_ipv6(problems: list[str], network: Network | None, nodes: list[Node]) -> None:
    """A dual-stack LAN: every node has its own IPv6 address inside prefix6, or none has one."""
    prefix6 = network.prefix6 if network else None
    for n in nodes:
        if prefix6 is None and n.address6 is not None:
            problems.append(f"{n.name}: address6 needs [network] prefix6, the LAN's IPv6 prefix "
                            "(e.g. 2001:db8:40::/64)")
        elif prefix6 is not None and n.address6 is None:
            problems.append(f"{n.name}: address6 is required on a dual-stack LAN ([network] prefix6 "
                            f"{prefix6}): the directors reach real servers and each other over IPv6")
        elif prefix6 is not None and n.address6 not in prefix6:
            problems.append(f"{n.name}: address6 {n.address6} is outside prefix6 {prefix6}")
    given = [str(n.address6) for n in nodes if n.address6]
    for dup in sorted({a for a in given if given.count(a) > 1}):
        problems.append(f"directors/real_servers: duplicate node address6 {dup}")


def _check_service_vips(problems: list[str], services: list[Service | None], network: Network | None,
                        nodes: list[Node]) -> None:
    """A service's own VIP answers ARP (or neighbour solicitations) on the LAN like the
    cluster's: inside the subnet (or prefix6), no node's, not the gateway."""
    owners = {a: n.name for n in nodes for a in (n.address, n.address6) if a}
    for i, s in enumerate(services):
        if s is None or s.vip is None:
            continue
        key = f"services[{i}].vip"
        if isinstance(s.vip, IPv6Address):
            prefix6 = network.prefix6 if network else None
            if network is not None and prefix6 is None:
                problems.append(f"{key}: {s.vip} is IPv6 and the LAN has none: give [network] prefix6 "
                                "and each node's address6")
            elif prefix6 is not None and s.vip not in prefix6:
                problems.append(f"{key}: {s.vip} is outside prefix6 {prefix6}: the directors must "
                                "answer neighbour solicitations for it")
            elif network is not None and s.vip == network.gateway6:
                problems.append(f"{key}: {s.vip} is also the IPv6 gateway")
        elif network is not None and s.vip not in network.subnet:
            problems.append(f"{key}: {s.vip} is outside the subnet {network.subnet}: the directors "
                            "must answer ARP for it")
        elif network is not None and s.vip in (network.subnet.network_address, network.subnet.broadcast_address):
            problems.append(f"{key}: {s.vip} is the network or broadcast address of {network.subnet}")
        elif network is not None and s.vip == network.gateway:
            problems.append(f"{key}: {s.vip} is also the gateway")
        if s.vip in owners:
            problems.append(f"{key}: {s.vip} is also the address of {owners[s.vip]}; a VIP must be "
                            "its own address")


def _check_link(problems: list[str], link: Link | None, asked: bool, directors: list[Node]) -> None:
    """Each director has a distinct address on the link, inside its subnet, or none has one."""
    with_address = [d for d in directors if d.link_address is not None]
    if not asked:
        for d in with_address:
            problems.append(f"{d.name}: link_address needs a [link] section (subnet, interface)")
        return
    if link is None:
        return
    if len(with_address) != len(directors):
        for d in directors:
            if d.link_address is None:
                problems.append(f"{d.name}: link_address is required with a [link] section")
        return
    reserved = {link.subnet.network_address, link.subnet.broadcast_address}
    for d in with_address:
        if d.link_address not in link.subnet:
            problems.append(f"{d.name}: link_address {d.link_address} is outside the link "
                            f"subnet {link.subnet}")
        elif d.link_address in reserved and link.subnet.prefixlen < 31:
            problems.append(f"{d.name}: link_address {d.link_address} is the link's network "
                            "or broadcast address")
    if len({d.link_address for d in with_address}) < len(with_address):
        problems.append(f"directors: both have link_address {with_address[0].link_address}; "
                        "each needs its own")


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
    cluster = parse(data, str(path))
    problems = []
    secret_file = cluster.heartbeat.secret_file
    if secret_file and not (path.parent / secret_file).is_file():
        problems.append(f"heartbeat.secret_file: {path.parent / secret_file} does not exist; "
                        "create it (32 or more random characters) or remove secret_file "
                        "to have the secret generated")
    keys = list(cluster.access.ssh_keys)
    for name in cluster.access.ssh_key_files:
        key_file = path.parent / name
        try:
            lines = key_file.read_text().splitlines()
        except OSError as e:
            problems.append(f"access.ssh_key_files: {key_file}: {e.strerror}; give the .pub file "
                            "(relative to the profile), never the private key")
            continue
        for n, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                why = sshkeys.problem(line)
                if why:
                    problems.append(f"access.ssh_key_files: {key_file} line {n} ({_short(line)}): {why}")
                else:
                    keys.append(" ".join(line.split()))
    if problems:
        raise ProfileError(problems, str(path))
    if keys != list(cluster.access.ssh_keys):
        cluster = replace(cluster, access=replace(cluster.access, ssh_keys=tuple(dict.fromkeys(keys))))
    return cluster


def to_dict(cluster: Cluster) -> dict[str, Any]:
    """The profile mapping for a Cluster: ``parse(to_dict(c)) == c`` (used for seeds)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (IPv4Address, IPv4Network, IPv6Address, IPv6Network)):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    def table(obj: Any, role: str | None = None) -> dict[str, Any]:
        # the secret file is a host path (seed=False): the seed carries the secret itself
        return {f.name: plain(getattr(obj, f.name)) for f in _settings(type(obj), role)
                if getattr(obj, f.name) is not None and f.metadata["seed"]}

    def service_table(s: Service) -> dict[str, Any]:
        # a group has no single port; a service without a group or persistence says nothing of
        # them (seeds written before they existed read the same)
        return {k: v for k, v in table(s).items()
                if not (k in ("ports", "persistent") and not v) and not (k == "port" and s.ports)}

    return {
        **table(cluster),
        "network": table(cluster.network),
        **({"link": table(cluster.link)} if cluster.link else {}),
        "directors": [table(n, DIRECTOR) for n in cluster.directors],
        "real_servers": [table(n, REALSERVER) for n in cluster.real_servers],
        "services": [service_table(s) for s in cluster.services],
        # only the chosen stack's section: parse() rejects the other one
        **({"vrrp": table(cluster.vrrp)} if cluster.keepalived else {"heartbeat": table(cluster.heartbeat)}),
        **({"access": table(cluster.access)} if cluster.access.ssh else {}),
        **({"metrics": table(cluster.metrics)} if cluster.metrics.enabled else {}),
        **({"logging": table(cluster.logging)} if cluster.logging.remote else {}),
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
