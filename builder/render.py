"""Pure functions from (cluster, node) to the files that node needs.

Only Jinja2 beyond the standard library, so the same code previews files on the host
(``builder render``) and writes them inside the image at first boot. The rendering functions
have no side effects; ``write_atomic`` and ``write_tree`` at the end are the only writers.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2

from builder import contract
from builder.files import File, write_atomic, write_tree  # noqa: F401 - their home for the renderers' users
from builder.profile import Cluster, Node

TEMPLATES = Path(__file__).with_name("templates")
DOCROOT = "/var/www/html"  # Debian's Apache serves here, not the howto's /var/www
SYSCTL_DIRECTOR, SYSCTL_REALSERVER = contract.SYSCTL_DIRECTOR, contract.SYSCTL_REALSERVER
LINK_FILE = "/etc/systemd/network/10-appliance-cluster.link"
KEEPALIVED_CONF = contract.KEEPALIVED_CONF
# Each stack's own files: first boot removes the other stack's (a node re-seeded onto another
# stack), and their units start only where their file is (ConditionPathExists).
STACK_FILES = {"heartbeat": ("/etc/ha.d/ha.cf", "/etc/ha.d/haresources", "/etc/ha.d/authkeys",
                             contract.LDIRECTORD_CF),
               "keepalived": (KEEPALIVED_CONF, contract.KEEPALIVED_CHECKERS_CONF, contract.KEEPALIVED_ANNOUNCE)}
PING_WEIGHT = 20  # priority a director loses per unreachable ping node (keepalived)
AUTO_FAILBACK_GAP = 10  # the first director's extra priority with auto_failback: less than one ping node
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def heartbeat_time(seconds: float) -> str:
    """ha.cf durations: whole seconds as the howto writes them, fractions in milliseconds."""
    return str(int(seconds)) if seconds == int(seconds) else f"{round(seconds * 1000)}ms"


_env.filters["hbtime"] = heartbeat_time



def _renderer(cluster: Cluster, node: Node, **extra):
    ctx = dict(cluster=cluster, node=node, hb=cluster.heartbeat,
               iface=cluster.network.interface, **extra)
    return lambda name: _env.get_template(f"{name}.j2").render(ctx)


def page_digest(service) -> str:
    """keepalived's HTTP check compares the check page's md5 (the page realserver_files writes)."""
    return hashlib.md5((service.page_content + "\n").encode()).hexdigest()


def bracketed(address) -> str:
    """An address as it stands before a port (in a URL, in ldirectord.cf): IPv6 in brackets."""
    return f"[{address}]" if address.version == 6 else str(address)


def ldirectord_virtuals(cluster: Cluster) -> list[dict]:
    """Each service's lines in ldirectord.cf: an IPv6 VIP is virtual6 with real6 (the real
    servers' address6) and its fallback on ::1; a port group is its mark, real servers without
    a port, checked on the group's first."""
    out = []
    for s in cluster.services:
        vip = cluster.vip_of(s)
        six = "6" if vip.version == 6 else ""
        port = "" if s.fwmark else f":{s.port}"
        reals = [f"real{six}={bracketed(r.address6 if six else r.address)}{port} gate"
                 + (f" {r.weight}" if r.weight != 1 else "") for r in cluster.real_servers]
        fallback = None
        if s.fallback:
            host, _, fport = s.fallback.rpartition(":")
            host = "[::1]" if six and host == "127.0.0.1" else host
            fallback = f"fallback{six}={host}{'' if s.fwmark else ':' + fport} gate"
        out.append({"virtual": f"virtual{six}={s.fwmark if s.fwmark else bracketed(vip) + port}",
                    "reals": reals, "fallback": fallback, "service": s,
                    "protocol": "fwm" if s.fwmark else s.protocol})
    return out


def keepalived_files(cluster: Cluster, node: Node) -> dict[str, File]:
    """keepalived: VRRP for the VIPs, and its checkers in place of ldirectord, each in a file
    (and a daemon) of its own (contract.KEEPALIVED_CHECKERS_UNIT says why)."""
    first = node == cluster.directors[0]
    priority = 100 + (AUTO_FAILBACK_GAP if cluster.vrrp.auto_failback and first else 0)
    render = _renderer(cluster, node, priority=priority, ping_weight=PING_WEIGHT, page_digest=page_digest,
                       notify_fifo=contract.KEEPALIVED_NOTIFY_FIFO, notify_script=contract.KEEPALIVED_NOTIFY_SCRIPT,
                       state_dump=contract.KEEPALIVED_STATE_DUMP, hand_over=contract.KEEPALIVED_HAND_OVER,
                       announce=contract.KEEPALIVED_ANNOUNCE, checkers_conf=contract.KEEPALIVED_CHECKERS_CONF,
                       checkers_unit=contract.KEEPALIVED_CHECKERS_UNIT)
    return {KEEPALIVED_CONF: File(render("keepalived.conf")),
            contract.KEEPALIVED_CHECKERS_CONF: File(render("keepalived-checkers.conf")),
            contract.KEEPALIVED_ANNOUNCE: File(announcements(cluster))}


def for_layout(files: dict[str, File], layout: int) -> dict[str, File]:
    """A node's files as an image of an older contract.FILE_LAYOUT applies them. Layout 1 ran
    keepalived's VRRP and checkers as one daemon from keepalived.conf: the virtual servers go
    back into it (that image's own `appliance apply` reloads the master and restarts a backup)."""
    if layout >= contract.FILE_LAYOUT or contract.KEEPALIVED_CHECKERS_CONF not in files:
        return files
    out = dict(files)
    checkers = out.pop(contract.KEEPALIVED_CHECKERS_CONF).content
    servers = checkers[checkers.index("\nvirtual_server "):] if "\nvirtual_server " in checkers else ""
    out[KEEPALIVED_CONF] = File(out[KEEPALIVED_CONF].content + servers, out[KEEPALIVED_CONF].mode)
    return out


def announcements(cluster: Cluster) -> str:
    """vrrp-state's commands at MASTER: each VIP's takeover run (contract.announce_argv), one per line."""
    net, iface = cluster.network, cluster.network.interface
    runs = [contract.announce_argv(str(v), net.prefixlen, iface, contract.ANNOUNCE_EARLY) for v in cluster.vips4]
    runs += [contract.announce_argv(str(v), net.prefix6.prefixlen, iface, contract.ANNOUNCE_EARLY)
             for v in cluster.vips6 if net.prefix6]
    return (f"# {cluster.name}: each VIP's announcements when keepalived goes MASTER, started by vrrp-state\n"
            + "".join(" ".join(argv) + "\n" for argv in runs))


def heartbeat_files(cluster: Cluster, node: Node, secret: str | None) -> dict[str, File]:
    """heartbeat and ldirectord configuration, as in the howto's section 4."""
    if not secret:
        raise ValueError(f"{node.name}: a director needs the heartbeat secret")
    # one address resource per VIP, in the profile's order: VIPaddr (vip-takeover's, which
    # adds them the moment the peer is dead) with the fast takeover, else heartbeat's IPaddr2
    kind = "VIPaddr" if cluster.heartbeat.fast_takeover else "IPaddr2"
    net = cluster.network
    vips = [f"{kind}::{v}/{net.prefixlen}/{net.interface}/{net.broadcast_address}" for v in cluster.vips4]
    # heartbeat splits a resource's arguments at "::": an IPv6 address goes in its long form
    vips += [f"IPv6addr::{v.exploded}/{net.prefix6.prefixlen}/{net.interface}"
             for v in cluster.vips6 if net.prefix6]
    render = _renderer(cluster, node, secret=secret, vip_resources=vips,
                       virtuals=ldirectord_virtuals(cluster))
    return {
        "/etc/ha.d/ha.cf": File(render("ha.cf")),
        "/etc/ha.d/haresources": File(render("haresources")),
        "/etc/ha.d/authkeys": File(render("authkeys"), 0o600),
        contract.LDIRECTORD_CF: File(render("ldirectord.cf")),
    }


def director_files(cluster: Cluster, node: Node, secret: str | None) -> dict[str, File]:
    """The chosen stack's configuration, IPVS sysctls and the fallback page."""
    render = _renderer(cluster, node)
    stack = keepalived_files(cluster, node) if cluster.keepalived else heartbeat_files(cluster, node, secret)
    return {
        **stack,
        # read by LVSSyncDaemonSwap (in the director image), which runs the sync daemons for
        # both stacks: the dedicated link where there is one, else the LAN
        contract.SYNC_DEFAULTS: File(f"SYNC_INTERFACE={cluster.sync_interface}\nSYNC_ID={cluster.sync_id}\n"),
        SYSCTL_DIRECTOR: File(render("sysctl-director.conf")),
        # what the fallback (127.0.0.1:80) serves when no real server is healthy
        f"{DOCROOT}/index.html": File(render("index-fallback.html")),
    }


def realserver_files(cluster: Cluster, node: Node) -> dict[str, File]:
    """ARP suppression, the check page ldirectord requests, and a page naming this server."""
    render = _renderer(cluster, node)
    files = {
        SYSCTL_REALSERVER: File(render("sysctl-realserver.conf")),
        f"{DOCROOT}/index.html": File(render("index-realserver.html")),
    }
    for s in cluster.services:
        if s.checktype == "negotiate":
            files[f"{DOCROOT}/{s.request}"] = File(s.page_content + "\n")
    return files


SSHD_CONFIG = contract.SSHD_CONFIG
AUTHORIZED_KEYS = contract.SSH_AUTHORIZED_KEYS
HOST_KEY = contract.SSH_HOST_KEY


def access_files(cluster: Cluster, host_key: tuple[str, str] | None) -> dict[str, File]:
    """Key-only root login from the profile's [access]: sshd reads keys from a file first boot
    owns (not root's home), no password or keyboard-interactive method, the node's own host
    key from its seed (host_key: private, public) and no other. No PAM: with keys only it has
    nothing to decide (sshd itself honours /etc/nologin and account expiry), and its session
    modules (pam_motd's run-parts above all) cost ~0.25 s a login under TCG: `builder status`
    went from 4.5 to 3.3 s cold. Root's password field is "*" (no password, not locked:
    without PAM sshd refuses a locked account even with a key)."""
    if not cluster.access.ssh:
        return {}
    files = {
        SSHD_CONFIG: File("# key-only root login: the profile's [access] ssh_keys (written at first boot)\n"
                          "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                          "KbdInteractiveAuthentication no\nAuthenticationMethods publickey\nUsePAM no\n"
                          f"AuthorizedKeysFile {AUTHORIZED_KEYS.replace('root', '%u')}\n"
                          f"HostKey {HOST_KEY}\n"),
        AUTHORIZED_KEYS: File("".join(k + "\n" for k in cluster.access.ssh_keys)),
    }
    if host_key:
        files[HOST_KEY] = File(host_key[0], 0o600)
        files[HOST_KEY + ".pub"] = File(host_key[1] + "\n")
    return files


def tls_files(cluster: Cluster, node: Node, tls: tuple[str, str] | None) -> dict[str, File]:
    """TLS on the real servers' port 443 (builder/tls.py: tls is the cluster's certificate and
    key from the seed): Apache's mod_ssl, loaded by this site file itself rather than by
    a2enmod at first boot, and one virtual host serving the same document root as port 80.
    A director gets the certificate alone: ldirectord's https checks (IO::Socket::SSL verifies
    peers by default) trust it through SSL_CERT_FILE, set in its units' drop-ins."""
    if not cluster.serves_tls or not tls:  # the seed always has it (seed.appliance)
        return {}
    if node.is_director:
        return {contract.TLS_CERT: File(tls[0])}
    return {
        contract.TLS_CERT: File(tls[0]),
        contract.TLS_KEY: File(tls[1], 0o600),
        contract.APACHE_TLS_SITE: File(
            f"# TLS on {contract.TLS_PORT} for the port groups of [[services]] (written at first boot)\n"
            "<IfModule !ssl_module>\n\tLoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n</IfModule>\n"
            f"Listen {contract.TLS_PORT}\n"
            f"<VirtualHost *:{contract.TLS_PORT}>\n\tDocumentRoot {DOCROOT}\n\tSSLEngine on\n"
            f"\tSSLCertificateFile {contract.TLS_CERT}\n\tSSLCertificateKeyFile {contract.TLS_KEY}\n"
            "</VirtualHost>\n"),
    }


NODE_EXPORTER_DEFAULTS = contract.NODE_EXPORTER_DEFAULTS
APACHE_EXPORTER_DEFAULTS = contract.APACHE_EXPORTER_DEFAULTS
NFTABLES_CONF = contract.NFTABLES_CONF


def metrics_files(cluster: Cluster, node: Node) -> dict[str, File]:
    """node_exporter (and Apache's exporter on real servers) on the profile's port (their
    firewall: nftables_files)."""
    m = cluster.metrics
    if not m.enabled:
        return {}
    files = {
        NODE_EXPORTER_DEFAULTS: File(
            "# [metrics] of the profile (written at first boot)\n"
            # one scrape at a time (a second is refused, not queued), no Go runtime metrics
            f'ARGS="--web.listen-address=:{m.port} --web.max-requests=1 --web.disable-exporter-metrics '
            "--collector.disable-defaults "
            + " ".join(f"--collector.{name}" for name in contract.NODE_EXPORTER_COLLECTORS)
            + f' --collector.textfile.directory={contract.METRICS_TEXTFILE_DIR}"\n'),
    }
    if not node.is_director:
        files[APACHE_EXPORTER_DEFAULTS] = File(
            "# [metrics] of the profile (written at first boot): mod_status on localhost only\n"
            f'ARGS="--scrape_uri=http://127.0.0.1/server-status/?auto --web.listen-address=:{m.apache_port}"\n')
    return files


def nftables_files(cluster: Cluster, node: Node) -> dict[str, File]:
    """One nftables file, each table replaced whole when it loads: the exporters' firewall
    ([metrics]) and, on directors, the marks of the port groups (both directors mark alike, so
    a connection synchronised to the peer is balanced by the same virtual service)."""
    tables = []
    m = cluster.metrics
    if m.enabled:
        ports = ", ".join(map(str, [m.port] if node.is_director else [m.port, m.apache_port]))
        scrapers = ", ".join(str(n) for n in m.scrapers)
        tables.append(
            "# [metrics] of the profile: only its scrapers reach the exporters\n"
            "table inet appliance_metrics\ndelete table inet appliance_metrics\n"
            "table inet appliance_metrics {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n"
            f"\t\ttcp dport {{ {ports} }} ip saddr != {{ {scrapers} }} drop\n"
            f"\t\ttcp dport {{ {ports} }} meta nfproto ipv6 drop\n\t}}\n}}\n")
    if node.is_director and cluster.fwmark_services:
        rules = "".join(f"\t\t{'ip6' if cluster.vip_of(s).version == 6 else 'ip'} daddr {cluster.vip_of(s)} "
                        f"{s.protocol} dport {{ {', '.join(map(str, s.ports))} }} meta mark set {s.fwmark}\n"
                        for s in cluster.fwmark_services)
        tables.append(
            "# the port groups of [[services]]: IPVS balances each group's firewall mark\n"
            "table inet appliance_fwmark\ndelete table inet appliance_fwmark\n"
            "table inet appliance_fwmark {\n\tchain prerouting {\n"
            f"\t\ttype filter hook prerouting priority mangle; policy accept;\n{rules}\t}}\n}}\n")
    if not tables:
        return {}
    return {NFTABLES_CONF: File("#!/usr/sbin/nft -f\n" + "".join(tables), 0o755)}


def logging_files(cluster: Cluster) -> dict[str, File]:
    """systemd-journal-upload's target: the profile's receiver (plain HTTP, inside the LAN)."""
    if not cluster.logging.remote:
        return {}
    return {contract.JOURNAL_UPLOAD_CONF: File(
        f"# [logging] remote of the profile (written at first boot)\n[Upload]\nURL=http://{cluster.logging.remote}\n")}


def node_files(cluster: Cluster, node: Node, secret: str | None,
               host_key: tuple[str, str] | None = None, tls: tuple[str, str] | None = None) -> dict[str, File]:
    """Every file that makes an image into `node`; the secret is needed on directors only, the
    host key (from the seed) where the profile gives SSH keys, the TLS certificate and key
    (cert, key; a director uses the certificate alone) where a service's ports include 443."""
    sysctl = SYSCTL_DIRECTOR if node.is_director else SYSCTL_REALSERVER
    render = _renderer(cluster, node, sysctl_path=sysctl)
    files = {
        "/etc/hostname": File(node.name + "\n"),
        "/etc/hosts": File(render("hosts")),
        "/etc/network/interfaces": File(render("interfaces")),
    }
    if node.mac:  # udev names the NIC with this MAC as the cluster interface, whatever it enumerates as
        files[LINK_FILE] = File(f"# {node.name}: the cluster address goes on the NIC with this MAC\n"
                                f"[Match]\nMACAddress={node.mac}\n\n[Link]\nName={cluster.network.interface}\n")
    if cluster.network.dns:
        files["/etc/resolv.conf"] = File("".join(f"nameserver {a}\n" for a in cluster.network.dns))
    if node.is_director:
        files.update(director_files(cluster, node, secret))
    else:
        files.update(realserver_files(cluster, node))
    files.update(access_files(cluster, host_key))
    files.update(tls_files(cluster, node, tls))
    files.update(metrics_files(cluster, node))
    files.update(nftables_files(cluster, node))
    files.update(logging_files(cluster))
    return dict(sorted(files.items()))
