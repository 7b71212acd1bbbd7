"""Facts the builder, the image's own code and the lab must agree on, stated once.

Paths of runtime files a stack's scripts write and the lab or the watchdog reads, the units
that make up each stack, and the watchdog's limits. Plain constants, no imports: the image's
long-running helpers (firstboot/hawatch.py) import this without Jinja2 or the profile code.
"""
from __future__ import annotations

# the seed: a NoCloud ISO with this volume label, and appliance.json in this format
SEED_LABEL = "cidata"
SEED_LABELS = (SEED_LABEL, SEED_LABEL.upper())   # what first boot accepts (some tools upper-case it)
SEED_APPLIANCE = "appliance.json"
SEED_FORMAT = 1

STATE_DIR = "/var/lib/appliance"          # what first boot made of the seed (node.json, configured)
NODE_JSON = f"{STATE_DIR}/node.json"
CONFIGURED = f"{STATE_DIR}/configured"    # the instance-id, written last: the node is configured
# day 2 (`builder apply`): what the node runs now (a seed's appliance.json, 0600: it holds the
# secret and host key), the instance-ids of attached seeds already taken (an old seed left in the
# drive never undoes an apply; a seed not seen yet wins), and a seed staged by `apply --reboot`
APPLIED = f"{STATE_DIR}/applied.json"
SEEDS_SEEN = f"{STATE_DIR}/seeds-seen"
NEXT_SEED = f"{STATE_DIR}/next-seed.json"
UPDATE_INCOMING = f"{STATE_DIR}/incoming"  # `builder update` copies a bundle here (the state partition)
UPDATE_TRIES = 3  # boots a new version gets (systemd-boot's counter) before the previous one boots again
# a stage ahead of a node's turn runs beside its service: its page cache (a 118-MiB bundle read, a
# 300-MiB slot written, in a 384-MiB guest) is kept to its own cgroup, its CPU and I/O weight least
UPDATE_STAGE_LIMITS = "-p MemoryHigh=96M -p CPUWeight=1 -p IOWeight=1"
IMAGE_OF = {"director": "director", "realserver": "webserver"}  # a node's role -> its image (and bundle)
# on the root: which applied configuration its files are (state.stamp). A root that holds another
# (an update's fresh root: issue 25) is rendered again at boot from applied.json
RENDERED = "/etc/appliance/rendered"
# GPT partition types (lower case, as lsblk prints them): the image's (mkosi.repart/) and those
# first boot adds (repart.d: slot B is a root, XBOOTLDR holds updates' kernels)
GPT_ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
GPT_BIOS = "21686148-6449-6e6f-744e-656564454649"
GPT_ROOT = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"     # x86-64
GPT_XBOOTLDR = "bc13c2ff-59e6-4262-a352-b275fd6f7172"
APPLIANCE_CLI = "/usr/bin/appliance"      # status, config, apply: what the builder runs over SSH
SSH_UNIT = "ssh.service"                  # enabled by first boot only where the profile gives keys
UNIT_WANTS = "/etc/systemd/system/multi-user.target.wants"  # where first boot and apply enable units
LDIRECTORD_CF = "/etc/ha.d/ldirectord.cf"
# each role's sysctls: first boot applies them at every boot, before networking starts
SYSCTL_DIRECTOR = "/etc/sysctl.d/60-lvs-director.conf"
SYSCTL_REALSERVER = "/etc/sysctl.d/60-lvs-realserver.conf"
LDIRECTORD_PID = "/run/ldirectord.ldirectord.cf.pid"   # ldirectord's own: /var/run/ldirectord.<config>.pid
# key-only sshd (render.access_files): its config, the keys root may log in with, the host key
SSHD_CONFIG = "/etc/ssh/sshd_config.d/10-appliance.conf"
SSH_AUTHORIZED_KEYS = "/etc/ssh/authorized_keys/root"
SSH_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
# TLS on the real servers (render.tls_files) where a service's ports include TLS_PORT: the
# cluster's certificate and key (made by the builder, on the real servers' seeds) and Apache's site
TLS_PORT = 443
TLS_CERT = "/etc/appliance/tls/cluster.crt"
TLS_KEY = "/etc/appliance/tls/cluster.key"
APACHE_TLS_SITE = "/etc/apache2/sites-enabled/appliance-tls.conf"
DRAIN_TIMEOUT = 300.0       # seconds a drained real server may keep connections before removal
SYNC_WAIT = 120.0           # seconds a hand-over waits for the standby to hold the active's connections

# the console lines a harness (the lab, a hypervisor's serial log) waits for
READY = "APPLIANCE READY"                 # READY node=N role=R address=A instance=I
NOT_CONFIGURED = "APPLIANCE NOT CONFIGURED"
FAILED = "APPLIANCE FAILED"
READY_PATTERN = READY + r" node=(\S+) role=(\S+) address=(\S+) instance=(\S+)"
PROBLEM_PATTERN = r"APPLIANCE (NOT CONFIGURED|FAILED).*"
READY_UNIT = "appliance-ready.service"    # prints READY or FAILED (also to the journal)
# systemd-boot sets it on a boot whose entry counts tries: a boot on trial (firstboot/update.py)
TRIAL_BOOT_VAR = "/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
# builds: the Debian release by default, and the timestamp of everything when neither
# SOURCE_DATE_EPOCH nor a git commit gives one (images and seeds alike: reproducible)
RELEASE = "trixie"
FALLBACK_EPOCH = 1700000000
BOOT_TIMEOUT = 600.0   # seconds a machine may take to READY: several at once on 2 TCG cores
NIC_WAIT = 120.0       # seconds first boot waits for the profile's NIC to appear (its driver's probe)

# keepalived runs as two daemons from two files: VRRP (KEEPALIVED_UNIT, --vrrp) and the checkers
# that keep the IPVS table (KEEPALIVED_CHECKERS_UNIT, --check). A live change to the real servers
# reloads the checkers only: a VRRP reload pauses the master's adverts, and on a starved guest
# the pause outlasted the backup's down timer (keepalived suite, step 18: the VIP moved, 4 RSTs).
KEEPALIVED_UNIT = "keepalived.service"
KEEPALIVED_CHECKERS_UNIT = "keepalived-checkers.service"
KEEPALIVED_CHECKERS_CONF = "/etc/keepalived/checkers.conf"
KEEPALIVED_CHECKERS_PID = "/run/keepalived-checkers.pid"  # its main pid file: VRRP's daemon keeps Debian's
# Which files a node's image reads its configuration from, said by `appliance config`: `builder
# apply` renders for the layout each director runs, so a builder newer than a node's image
# (`builder upgrade` drains old nodes) never hands it files its own code misapplies.
# 1 (no "layout" said): keepalived's VRRP and checkers in one daemon, from keepalived.conf.
# 2: keepalived's checkers in a daemon of their own, from KEEPALIVED_CHECKERS_CONF.
FILE_LAYOUT = 2
# keepalived's VRRP process, the notify FIFO that carries its transitions in order, and the
# state dump it writes on SIGUSR1 (the watchdog's proof that the process still answers)
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
KEEPALIVED_VRRP_PID = "/run/vrrp.pid"        # Debian's keepalived keeps its pid files in /run
# /run/keepalived is the unit's RuntimeDirectory (images/director: keepalived.service.d)
KEEPALIVED_NOTIFY_FIFO = "/run/keepalived/vrrp-notify.fifo"
KEEPALIVED_NOTIFY_SCRIPT = "/usr/libexec/appliance/vrrp-state"
# keepalived.data in the unit's TMPDIR (keepalived 2.2 and 2.3 both honour it; state_dump_file
# is 2.3's only)
KEEPALIVED_STATE_DUMP = "/run/keepalived/keepalived.data"
KEEPALIVED_STATE = "/run/keepalived.state"   # MASTER, BACKUP, FAULT or STOP, written by vrrp-state
# keepalived's track file for a graceful hand-over: 1 puts the instance in FAULT (a priority-0
# advert, the VIPs released) while the checkers keep the IPVS table; 0 at every start
KEEPALIVED_HAND_OVER = "/run/keepalived/hand-over"

# the IPVS sync daemons, run outside both stacks (LVSSyncDaemonSwap says why)
SYNC_SCRIPT = "/etc/ha.d/resource.d/LVSSyncDaemonSwap"
SYNC_DEFAULTS = "/etc/default/lvssyncdaemonswap"
SYNC_BACKUP_UNIT = "ipvs-sync-backup.service"

# the HA watchdog (firstboot/hawatch.py): what it found, for `appliance status` and the lab
HAWATCH_UNIT = "appliance-hawatch.service"
HAWATCH_HEALTH = "/run/appliance/ha-health.json"
HA_RESET = "/usr/libexec/appliance/ha-reset"   # clears what a killed stack left (VIP, sync master)
# the gratuitous-ARP announcer of a VIP (heartbeat's send_arp), one per VIP: vip-takeover and the
# HA watchdog start it (replacing a running one), VIPaddr only when none runs; a release, a reset
# or keepalived leaving MASTER stops it (shell and the image's scripts spell the name out)
SEND_ARP_PIDFILE = "/run/vipaddr-send_arp-{vip}.pid"
SEND_ARP = "/usr/libexec/heartbeat/send_arp"  # gratuitous ARP (resource-agents)
SEND_UA = "/usr/libexec/heartbeat/send_ua"    # unsolicited neighbour advertisement
# A new master announces its VIPs when it takes them; a switch or client that missed that burst
# keeps sending to the old director. So the HA watchdog (either stack), once it sees a VIP newly
# held, announces every held VIP every ANNOUNCE_INTERVAL_MS for ANNOUNCE_EARLY_FOR s (one
# send_arp / send_ua run per VIP, stopped if the VIP goes), then ANNOUNCE_REPEAT packets every
# ANNOUNCE_REFRESH s while it holds them. keepalived's own second burst (5 s) stays; its refresh is off.
ANNOUNCE_INTERVAL_MS = 500
ANNOUNCE_EARLY_FOR = 10
ANNOUNCE_REFRESH = 60
ANNOUNCE_REPEAT = 2
ANNOUNCE_EARLY = ANNOUNCE_EARLY_FOR * 1000 // ANNOUNCE_INTERVAL_MS  # a takeover's run, in announcements
# keepalived's MASTER event starts the takeover's run from vrrp-state (shell, no Python to start:
# 2.5 s under a loaded TCG guest, CI): one command per VIP, rendered with the configuration
KEEPALIVED_ANNOUNCE = "/etc/keepalived/announce"

HAWATCH_INTERVAL = 1.0      # seconds between probes
HAWATCH_PROBE_TIMEOUT = 3.0  # a stack that takes longer than this to answer has missed a probe
HAWATCH_MISSES = 2           # missed probes in a row before the stack is restarted
HAWATCH_GRACE = 20.0         # seconds after a (re)start before probes count (TCG start-up)
HAWATCH_RESTARTS = 3         # restarts allowed within HAWATCH_WINDOW; then it gives the VIP up
HAWATCH_WINDOW = 600.0
HAWATCH_CURED = 30.0         # seconds of one VIP holder and an answering stack after a step-out: a cure
HAWATCH_SYNC_AFTER = 5.0     # seconds the master sync daemon may run apart from the VIP (a transition)
# words of its journal lines (syslog identifier HAWATCH_TAG) that the lab and bench count
HAWATCH_TAG = "ha-watchdog"
HAWATCH_RESTARTED = "killing and restarting"   # a restart: a hang, or a step-out
HAWATCH_STEPPED_OUT = "stepping out"           # both directors held the VIP; this one gave way
HAWATCH_GAVE_UP = "stopping it"                # the restart budget is spent
HAWATCH_SYNC_REPAIRED = "sync master repaired"  # the master sync daemon put back with the VIP
HAWATCH_VACANT = "no director holds the VIP"     # both up, neither holding it: the claimant restarts
HAWATCH_VACANCY_MENDED = "put the VIPs back"     # ... or, first, puts them back itself
HAWATCH_DEAF = "neither the peer nor a VIP holder answers on the LAN"  # the stack's verdict overdue: restarted
HAWATCH_DADFAILED = "failed duplicate address detection"  # an IPv6 VIP copy nobody can use: removed
HAWATCH_SPLIT = "the VIPs were split between the directors"  # each held part: mended towards the first IPv4 VIP

# metrics ([metrics], firstboot/metrics.py): node_exporter reads the HA state the watchdog writes
# into its textfile directory; nftables drops scrapes from anyone but the profile's scrapers
METRICS_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
METRICS_TEXTFILE = f"{METRICS_TEXTFILE_DIR}/appliance.prom"
NODE_EXPORTER_UNIT = "prometheus-node-exporter.service"
# node_exporter's collectors on an appliance: the shipped rules' (ipvs, textfile: the HA state,
# filesystem) and a machine's basics. Its ~40 defaults took 3 s a scrape under TCG, longer than
# the lab's interval: scrapes piled up and starved the guest (`ls` took 1.5 s)
NODE_EXPORTER_COLLECTORS = ("ipvs", "textfile", "filesystem", "cpu", "meminfo", "loadavg", "netdev",
                            "diskstats", "time", "uname")
APACHE_UNIT = "apache2.service"               # every node: the sorry page, the real servers' site
APACHE_EXPORTER_UNIT = "prometheus-apache-exporter.service"
NFTABLES_UNIT = "nftables.service"
NFTABLES_CONF = "/etc/nftables.conf"
NODE_EXPORTER_DEFAULTS = "/etc/default/prometheus-node-exporter"
APACHE_EXPORTER_DEFAULTS = "/etc/default/prometheus-apache-exporter"
# logs off the box ([logging] remote): journald's own uploader, to a systemd-journal-remote
JOURNAL_UPLOAD_UNIT = "systemd-journal-upload.service"
JOURNAL_UPLOAD_CONF = "/etc/systemd/journal-upload.conf.d/10-appliance.conf"
# the units a live change may switch on or off (`appliance apply`): [access], [metrics], [logging]'s
OPTIONAL_UNITS = (SSH_UNIT, NODE_EXPORTER_UNIT, APACHE_EXPORTER_UNIT, NFTABLES_UNIT, JOURNAL_UPLOAD_UNIT)


# the kernel's IPv6 address flags (linux/if_addr.h): vip-takeover adds VIPs with NODAD, the HA
# watchdog reads them all from IF_INET6 (hex, 5th column) to leave a VIP in DAD or failed alone
IFA_F_NODAD, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x02, 0x08, 0x20, 0x40
IF_INET6 = "/proc/net/if_inet6"


def is_ipv6(address: str) -> bool:
    """An address as the seed and the nodes carry it (text): only IPv6 has colons. The builder's
    side holds ipaddress objects and asks `.version == 6`."""
    return ":" in address


def announce_argv(vip: str, prefixlen: int, iface: str, count: int) -> list[str]:
    """One VIP's run of `count` announcements, ANNOUNCE_INTERVAL_MS apart: gratuitous ARP (with its
    PID file, by which a release stops it) or, for IPv6, unsolicited neighbour advertisements."""
    n, ms = str(count), str(ANNOUNCE_INTERVAL_MS)
    if is_ipv6(vip):
        return [SEND_UA, "-i", ms, "-c", n, vip, str(prefixlen), iface]
    return [SEND_ARP, "-i", ms, "-r", n, "-p", SEND_ARP_PIDFILE.format(vip=vip), iface, vip,
            "auto", "not_used", "not_used"]
