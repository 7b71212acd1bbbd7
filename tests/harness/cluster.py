"""The howto's four machines booted from the images on one isolated segment, plus a client.

    with Cluster(profile_path, workdir, accel) as cluster:
        cluster["loadb1"].succeed("ipvsadm -L -n")
        cluster.vip.get("/")
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from builder import profile, secret, seed
from harness import net, wait
from harness.vm import VM

log = logging.getLogger("harness.cluster")
ROOT = Path(__file__).resolve().parents[2]
IMAGES = {profile.DIRECTOR: "director.img", profile.REALSERVER: "webserver.img"}
SERVER_RE = re.compile(r'data-server="([^"]+)"')

# What a reboot would clear on a crashed director, run while its link is still cut: its cluster
# daemons (heartbeat's children, send_arp and a heartbeat-started ldirectord live in
# heartbeat's cgroup), the VIP, the IPVS table and sync daemons, their /run state, the
# neighbour cache; and the clock, which stood still while the VM was stopped.
REVIVE_SCRIPT = """\
systemctl kill -s KILL heartbeat.service ldirectord.service logd.service
systemctl stop heartbeat.service ldirectord.service logd.service
systemctl reset-failed
for a in $(ip -4 -o addr show dev {iface} | awk '$4 ~ /^{vip}\\// {{print $4}}'); do
    ip addr del "$a" dev {iface}
done
ipvsadm -C
ipvsadm --stop-daemon master 2>/dev/null; ipvsadm --stop-daemon backup 2>/dev/null
rm -rf /run/heartbeat/rsctmp/* /run/resource-agents/* /run/heartbeat.pid /run/ldirectord.*.pid \\
       /run/vipaddr-send_arp-*.pid
ip neigh flush all
date -s @{now:.3f} >/dev/null
! ip -4 -o addr show dev {iface} | grep -F ' {vip}/'
"""


@dataclass(frozen=True)
class Response:
    status: int          # 0: no HTTP answer (timeout, refused)
    body: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def server(self) -> str | None:
        """Which real server (or `<director>-fallback`) produced the page."""
        match = SERVER_RE.search(self.body)
        return match.group(1) if match else None


class Client:
    """The howto's browser: HTTP from the client address inside the namespace."""

    def __init__(self, segment: net.Segment, host: IPv4Address):
        self.segment, self.host = segment, host

    def get(self, path: str = "/", timeout: float = 3) -> Response:
        started = time.monotonic()
        proc = self.segment.run("curl", "-s", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code}",
                                f"http://{self.host}{path}", check=False, timeout=timeout + 5)
        body, _, code = proc.stdout.rpartition("\n")
        return Response(int(code) if code.isdigit() else 0, body, time.monotonic() - started)

    def servers(self, count: int, path: str = "/") -> list[str | None]:
        """Who answered each of `count` requests in turn (None: the request failed)."""
        return [r.server if r.ok else None for r in (self.get(path) for _ in range(count))]

    def browse(self, path: str = "/", timeout: float = 90) -> str:
        """Load the page in headless chromium, run inside the namespace; returns the DOM."""
        proc = self.segment.run(
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", "--user-data-dir=/tmp/lvs-appliance-chromium",
            f"--timeout={int(timeout * 1000)}", "--dump-dom", f"http://{self.host}{path}",
            timeout=timeout + 30)
        return proc.stdout


class Cluster:
    def __init__(self, profile_path: Path, workdir: Path, accel: str, boot_timeout: float = 600):
        self.profile_path = profile_path
        self.spec = profile.load(profile_path)
        self.workdir, self.accel, self.boot_timeout = workdir, accel, boot_timeout
        self.vms: dict[str, VM] = {}
        self._stack = contextlib.ExitStack()
        self.segment: net.Segment | None = None
        self.boot_seconds = 0.0

    # the client takes the highest free address of the subnet
    def _client_address(self) -> IPv4Address:
        used = {n.address for n in self.spec.nodes} | {self.spec.vip}
        return next(a for a in reversed(list(self.spec.network.subnet.hosts())) if a not in used)

    def __enter__(self) -> "Cluster":
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        spec = self.spec
        seeds = self.workdir / "seeds"
        key = secret.load_or_create(spec, self.profile_path, self.workdir / "secrets")
        seed.write_seeds(spec, key, seeds)
        self.segment = self._stack.enter_context(
            net.Segment(str(self._client_address()), spec.network.prefixlen))
        for node in spec.nodes:
            image = ROOT / IMAGES[node.role]
            if not image.exists():
                raise FileNotFoundError(f"{image.name} is missing: run `make {image.name}`")
            octets = node.address.packed
            vm = VM(node.name, image, self.workdir, seed=seeds / f"{node.name}.iso",
                    accel=self.accel, tap=self.segment.tap(f"tap-{node.name}"[:15]),
                    mac="52:54:00:%02x:%02x:%02x" % tuple(octets[1:]), netns=net.NETNS)
            self.vms[node.name] = vm
            self._stack.callback(vm.shutdown)
        started = time.monotonic()
        for vm in self.vms.values():  # all boot at once; the waits below overlap
            vm.start()
        with concurrent.futures.ThreadPoolExecutor(len(self.vms)) as pool:
            for f in [pool.submit(vm.wait_until_ready, self.boot_timeout) for vm in self.vms.values()]:
                f.result()
        for vm in self.vms.values():
            vm.wait_for_agent(120)
        self.boot_seconds = time.monotonic() - started
        log.info("cluster ready in %.0fs", self.boot_seconds)

    def __exit__(self, *exc) -> None:
        self._stack.close()

    # ---- what tests use -------------------------------------------------------------
    def __getitem__(self, name: str) -> VM:
        return self.vms[name]

    @property
    def directors(self) -> list[VM]:
        return [self.vms[n.name] for n in self.spec.directors]

    @property
    def real_servers(self) -> list[VM]:
        return [self.vms[n.name] for n in self.spec.real_servers]

    @property
    def vip(self) -> Client:
        assert self.segment
        return Client(self.segment, self.spec.vip)

    def _vip_in(self, ip_addr_output: str) -> bool:
        """Whether `ip -4 -o addr show dev IFACE` output lists the VIP."""
        return f"inet {self.spec.vip}/" in ip_addr_output

    def holds_vip(self, director: VM) -> bool:
        return self._vip_in(director.succeed(f"ip -4 -o addr show dev {self.spec.network.interface}"))

    def vip_holders(self) -> list[VM]:
        """The directors holding the VIP; a crashed (unreachable) one holds nothing."""
        held = []
        for d in self.directors:
            try:
                if self.holds_vip(d):
                    held.append(d)
            except Exception:  # noqa: BLE001 - a crashed director cannot answer
                pass
        return held

    def active_director(self, timeout: float = 120) -> VM:
        """The one director holding the VIP (waits until exactly one does)."""
        def find():
            holders = self.vip_holders()
            return holders[0] if len(holders) == 1 else None
        return wait.until(find, timeout, "exactly one director to hold the VIP", interval=1)

    def revive(self, director: VM) -> None:
        """Bring a crashed director back as a fresh heartbeat member, as a reboot would, in
        ~15 s instead of a ~100-150 s boot under TCG.

        It resumes with its link cut, so nothing its old instance still believes reaches the
        network; REVIVE_SCRIPT clears what a reboot clears; then the link returns and
        heartbeat (and ldirectord, where it runs on both) start anew: the peer logs
        "Heartbeat restart on node ...", as after a reboot. Resuming without the cut is no
        recovery: heartbeat takes the old instance's return for a healed partition and
        restarts the holder. Use wait_rejoined() after it.
        """
        director.set_link(False)
        director.resume()
        director.wait_for_agent(60)
        director.succeed(REVIVE_SCRIPT.format(iface=self.spec.network.interface, vip=self.spec.vip,
                                              now=time.time()))
        director.set_link(True)
        both = self.spec.heartbeat.ldirectord == "both"
        director.succeed("systemctl start heartbeat.service" + (" ldirectord.service" if both else ""), 180)

    def heartbeat_view(self, director: VM) -> tuple[str, str, bool] | None:
        """(its peer's status, its own resource status, whether it holds the VIP) as
        `director` sees them, e.g. ("active", "all", True), in one guest command (each costs
        ~0.5 s under TCG); None while heartbeat cannot say (stopped, restarting)."""
        out = director.execute(
            f"s=$(cl_status nodestatus {self.standby_of(director).name} 2>/dev/null); echo \"${{s:-?}}\"; "
            "s=$(cl_status rscstatus 2>/dev/null); echo \"${s:-?}\"; "
            f"ip -4 -o addr show dev {self.spec.network.interface}")[1].splitlines()
        if len(out) < 2 or "?" in out[:2]:
            return None
        return out[0].strip(), out[1].strip(), self._vip_in("\n".join(out[2:]))

    def heartbeat_starts(self, director: VM) -> int:
        """How often heartbeat has started on `director` since it booted (its own restarts
        after a split brain included): a count to compare before and after a fault."""
        return int(director.execute("journalctl -b --no-pager -o cat -u heartbeat "
                                    "| grep -c 'Starting heartbeat'")[1].strip() or 0)

    def wait_rejoined(self, director: VM, timeout: float) -> None:
        """heartbeat on `director` sees its peer active and knows its own resource state."""
        wait.until(lambda: (self.heartbeat_view(director) or ("",))[0] == "active", timeout,
                   f"{director.name}: heartbeat to see its peer active")

    def all_serving(self) -> bool:
        names = {n.name for n in self.spec.real_servers}
        return set(self.vip.servers(2 * len(names))) == names

    def wait_all_serving(self, timeout: float) -> None:
        """Every real server answers through the VIP again: a fault's recovery is complete."""
        wait.until(self.all_serving, timeout, "every real server serving through the VIP")

    def settled(self) -> bool:
        """Both directors' heartbeats see each other active and neither is moving resources,
        exactly one holds the VIP, and every real server answers through it."""
        views = [self.heartbeat_view(d) for d in self.directors]
        if any(v is None or v[0] != "active" or v[1] == "transition" for v in views):
            return False
        return sum(v[2] for v in views) == 1 and self.all_serving()

    def wait_settled(self, timeout: float, steady: float = 10) -> None:
        """After a split brain heartbeat v1 gives up resources and restarts on both nodes, for
        over a minute: wait until the pair has stopped changing, not for a passing good moment."""
        wait.steady(self.settled, steady, timeout, "both directors settled with one VIP holder")

    def standby_of(self, active: VM) -> VM:
        return next(d for d in self.directors if d is not active)

    def director_journals(self, lines: int = 25) -> str:
        """heartbeat's and ldirectord's last journal lines per director, for a failure report;
        a crashed or unreachable director says so instead."""
        out = []
        for vm in self.directors:
            try:
                text = vm.succeed(f"journalctl -b --no-pager -o short-monotonic -n {lines} "
                                  "-u heartbeat -u ldirectord; ipvsadm -L -n", timeout=20)
            except Exception as e:  # noqa: BLE001 - a report must not fail on a dead node
                text = f"(no journal: {e})"
            out += [f"[{vm.name}] {line}" for line in text.splitlines() if line.strip()]
        return "\n".join(out)

    def console_tails(self, lines: int = 40) -> str:
        out = []
        for name, vm in self.vms.items():
            if vm.console_log.exists():
                tail = vm.console_log.read_text(errors="replace").splitlines()[-lines:]
                out += [f"[{name}] {line}" for line in tail if line.strip()]
        return "\n".join(out)
