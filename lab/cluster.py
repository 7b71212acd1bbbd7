"""A profile's machines booted from the images on one isolated segment, plus a client.

    with Cluster(profile_path, workdir, accel) as cluster:
        cluster.directors[0].succeed("ipvsadm -L -n")
        cluster.vip.get("/")

Every name, address, port and page it expects comes from the profile.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

from builder import contract, day2, profile, remote, render, seed, tls
from builder.run import run
from lab import logs, net, paths, stack, wait
from lab.client import Client
from lab.machine import Machine, Nic

log = logging.getLogger("lab.cluster")
BLOB_LINES = 200_000  # /blob.txt on every real server: `seq 1 N`, 1.3 MB, the same bytes everywhere
LINK_BRIDGE = "br-link"  # the directors' crossover cable, when the profile has one
LAN_OUI, LINK_OUI = "52:54:00", "52:54:01"  # QEMU's prefix; the link's NICs one apart


def mac(oui: str, address: IPv4Address) -> str:
    """A NIC's MAC from its address: stable across boots, unique per segment."""
    return oui + "".join(f":{b:02x}" for b in address.packed[1:])



class Cluster:
    def __init__(self, profile_path: Path, workdir: Path, accel: str, boot_timeout: float = contract.BOOT_TIMEOUT,
                 netns: str = net.TEST_NETNS, progress: Callable[[str], None] | None = None):
        self.profile_path = profile_path
        self.spec = self.with_operator(profile.load(profile_path), workdir)
        self.spec = self.with_monitoring(self.spec, self._client_address())
        self.stack = stack.for_profile(self.spec)
        self.workdir, self.accel, self.boot_timeout, self.netns = workdir, accel, boot_timeout, netns
        self.vms: dict[str, Machine] = {}
        self.progress = progress or log.info  # where boot progress goes (`up` prints it)
        self._stack = contextlib.ExitStack()
        self.segment: net.Segment | None = None
        self._neighbour: net.Segment | None = None
        self.journals: logs.JournalReceiver | None = None  # the lab's log receiver, from boot on
        self.boot_seconds = 0.0

    @staticmethod
    def with_operator(spec: profile.Cluster, workdir: Path) -> profile.Cluster:
        """The profile with the lab's own operator key added to [access]: every node runs sshd,
        and the suite's day-2 steps log in as an operator would (workdir/operator, made once)."""
        key = workdir / "operator"
        if not key.exists():
            workdir.mkdir(parents=True, exist_ok=True)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-operator", "-f", key])
        public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        if public in spec.access.ssh_keys:
            return spec
        return dataclasses.replace(spec, access=dataclasses.replace(
            spec.access, ssh_keys=(*spec.access.ssh_keys, public)))

    @staticmethod
    def with_monitoring(spec: profile.Cluster, client: IPv4Address) -> profile.Cluster:
        """The profile with [metrics] on and the lab's client (where lab/prometheus.py runs) among
        its scrapers, and [logging] to the lab's receiver: the suite watches the cluster as an
        operator's monitoring would."""
        m = spec.metrics
        if not (m.enabled and any(client in n for n in m.scrapers)):
            spec = dataclasses.replace(spec, metrics=dataclasses.replace(
                m, enabled=True, scrapers=(*m.scrapers, IPv4Network(f"{client}/32"))))
        # lab/logs.py receives every node's journal; a profile's own receiver lies outside the
        # lab's namespace, which nothing in the lab may reach
        return dataclasses.replace(spec, logging=profile.Logging(f"{client}:{logs.PORT}"))

    @property
    def reach(self) -> remote.Reach:
        """ssh to the nodes from inside the lab's namespace, verified by the cluster's known_hosts."""
        # short whatever the namespace's name (a profile's): a socket's path has at most 104 bytes
        control = Path(f"/tmp/appliance-ssh-{hashlib.sha1(self.netns.encode()).hexdigest()[:12]}")
        control.mkdir(mode=0o700, exist_ok=True)
        return remote.Reach(self.workdir / "secrets" / f"{self.spec.name}.known_hosts",
                            self.workdir / "operator", ("ip", "netns", "exec", self.netns), control)

    def operation(self, target: profile.Cluster, say: Callable[[str], None] = print) -> day2.Operation:
        """`builder apply|drain` of `target` against this running cluster, as an operator runs it."""
        return day2.Operation(target, self.reach, day2.load_keys(target, self.profile_path, self.workdir / "secrets"),
                              say)

    def seeds_for(self, spec: profile.Cluster, names: list[str] | None = None) -> Path:
        """Seed ISOs of `spec`'s nodes (or those named) under workdir/seeds, with host keys."""
        seeds = self.workdir / "seeds"
        secrets_dir = self.workdir / "secrets"
        seed.write_seeds(spec, seed.Keys.gather(spec, self.profile_path, secrets_dir), seeds, names)
        return seeds

    def with_added_server(self) -> profile.Cluster:
        """The profile plus one real server (`added`), like its last one, at the lowest address
        nothing uses: what an operator adds on day 2."""
        spec, last = self.spec, self.spec.real_servers[-1]
        used = {n.address for n in spec.nodes} | {spec.vip, *self._lab_hosts(), self._client_address(),
                                                  self._client_address(1)}
        address = next(a for a in spec.network.subnet.hosts() if a > last.address and a not in used)
        address6 = None
        if last.address6:  # a dual-stack LAN: the next free IPv6 address after the last one's
            address6 = self._free6_after(last.address6, {self._client_address6()})
        added = dataclasses.replace(last, name="added", address=address, address6=address6, mac=None)
        return dataclasses.replace(spec, real_servers=(*spec.real_servers, added))

    def boot_extra(self, spec: profile.Cluster, name: str) -> Machine:
        """Boot a node of `spec` that this cluster's profile does not have (a real server added
        on day 2) on the same segment; it is shut down with the cluster."""
        assert self.segment
        node = spec.node(name)
        self.seeds_for(spec, [name])
        tap = f"tapx-{name}"[:15]
        self.segment.tap(tap, net.LAN)
        vm = Machine(name, paths.image(node.role), self.workdir, seed=self.workdir / "seeds" / f"{name}.iso",
                     accel=self.accel, netns=self.netns,
                     nics=(Nic(tap, mac(LAN_OUI, node.address)),))
        vm.create()
        self._stack.callback(vm.shutdown)
        self.vms[name] = vm
        vm.start()
        vm.wait_until_ready(self.boot_timeout)
        vm.wait_for_agent(120)
        return vm

    def _lab_hosts(self) -> list[IPv4Address]:
        """The addresses the lab itself answers on the LAN: the gateway and ping nodes the
        profile names (inside the namespace: they route nowhere)."""
        net_, pings = self.spec.network, self.spec.failover.ping_nodes
        wanted = [net_.gateway, *pings] if net_.gateway else list(pings)
        return [a for a in dict.fromkeys(wanted) if a in net_.subnet]

    def _client_address6(self) -> IPv6Address | None:
        """On a dual-stack LAN the client also takes prefix6's ::fe, or the next one nothing uses."""
        prefix6 = self.spec.network.prefix6
        if prefix6 is None:
            return None
        return self._free6_after(prefix6.network_address + 0xfd)

    def _free6_after(self, address: IPv6Address, taken: frozenset | set = frozenset()) -> IPv6Address:
        """The first IPv6 address after `address` that no node, VIP, gateway (nor `taken`) uses."""
        spec = self.spec
        used = {n.address6 for n in spec.nodes} | set(spec.vips6) | {spec.network.gateway6} | taken
        return next(a for a in (address + i for i in range(1, 0x10000)) if a not in used)

    def _client_address(self, nth: int = 0) -> IPv4Address:
        """The client takes the highest address of the subnet no node, VIP or lab host uses (a
        second client, `nth` 1, the next one down)."""
        net_ = self.spec.network
        used = {n.address for n in self.spec.nodes} | {self.spec.vip, *self._lab_hosts()}
        return [a for a in reversed(list(net_.subnet.hosts())) if a not in used][nth]

    def neighbour(self) -> net.Segment:
        """A second client on the LAN, with a neighbour cache of its own (made once): e.g. one
        that missed a takeover's announcements, beside the client whose downloads are in flight."""
        if self._neighbour is None:
            assert self.segment
            client6 = self._client_address6()
            address6 = self._free6_after(client6) if client6 else None
            self._neighbour = self.segment.host("c2", str(self._client_address(1)),
                                                str(address6) if address6 else None)
        return self._neighbour

    def _segment(self) -> net.Segment:
        client6 = self._client_address6()
        return net.Segment(self.netns, str(self._client_address()), self.spec.network.prefixlen,
                           str(client6) if client6 else None,
                           self.spec.network.prefix6.prefixlen if self.spec.network.prefix6 else 64)

    def machines(self, seeds: Path, segment: net.Segment | None, existing: bool = False) -> dict[str, Machine]:
        """One Machine per node, each NIC on its tap with a MAC derived from its address; the
        taps are made when a segment is given (else the machines are already running)."""
        out = {}
        for i, node in enumerate(self.spec.nodes):
            nics = [(f"tap{i}-{node.name}", net.LAN, LAN_OUI, node.address)]
            if node.link_address:  # the dedicated heartbeat link: NIC 1, a bridge of its own
                nics.append((f"tl{i}-{node.name}", LINK_BRIDGE, LINK_OUI, node.link_address))
            made = []
            for tap, bridge, oui, address in nics:
                tap = tap[:15]  # IFNAMSIZ; the index keeps long names apart
                if segment:
                    segment.tap(tap, bridge)
                made.append(Nic(tap, mac(oui, address)))
            out[node.name] = Machine(
                node.name, paths.image(node.role), self.workdir, seed=seeds / f"{node.name}.iso",
                accel=self.accel, netns=self.netns, nics=tuple(made), existing=existing)
        return out

    def __enter__(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        spec = self.spec
        seeds = self.seeds_for(spec)
        for node in spec.nodes:
            paths.image(node.role)  # a missing image fails before anything is made
        self.segment = self._stack.enter_context(
            self._segment())
        for address in self._lab_hosts():
            self.segment.run("ip", "addr", "add", f"{address}/{spec.network.prefixlen}", "dev", net.LAN)
        if spec.link:
            self.segment.bridge(LINK_BRIDGE)
        # up before the nodes: an uploader with no receiver retries every few seconds and
        # re-reads its whole journal each time (~3 s of CPU a try under TCG, on every node)
        self.journals = self._stack.enter_context(logs.JournalReceiver(self))
        self.vms = self.machines(seeds, self.segment)
        for vm in self.vms.values():
            vm.create()
            self._stack.callback(vm.shutdown)
        started = time.monotonic()
        for vm in self.vms.values():  # all boot at once; the waits below overlap
            vm.start()
            self.progress(f"{vm.name}: booting, console log {vm.console_log}")

        def ready(vm: Machine) -> str:
            line = vm.wait_until_ready(self.boot_timeout).group(0)
            vm.wait_for_agent(120)
            return f"{line} ({time.monotonic() - started:.0f} s)"
        with concurrent.futures.ThreadPoolExecutor(len(self.vms)) as pool:
            for f in concurrent.futures.as_completed([pool.submit(ready, vm) for vm in self.vms.values()]):
                self.progress(f.result())
        self.boot_seconds = time.monotonic() - started
        log.info("cluster ready in %.0fs", self.boot_seconds)

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def attach(self) -> Cluster:
        """Drive a cluster another process booted (`up`): same machines, same namespace."""
        self.segment = self._segment()
        self.vms = self.machines(self.workdir / "seeds", None, existing=True)
        return self

    # ---- what tests use -------------------------------------------------------------
    def __getitem__(self, name: str) -> Machine:
        return self.vms[name]

    @property
    def directors(self) -> list[Machine]:
        return [self.vms[n.name] for n in self.spec.directors]

    @property
    def real_servers(self) -> list[Machine]:
        return [self.vms[n.name] for n in self.spec.real_servers]

    @property
    def vip(self) -> Client:
        assert self.segment
        return Client(self.segment, self.spec.vip, self.spec.web_service.port)

    @property
    def cacert(self) -> Path | None:
        """The real servers' TLS certificate (builder/tls.py), for HTTPS clients; None without TLS."""
        return tls.cert_path(self.spec, self.workdir / "secrets") if self.spec.serves_tls else None

    def client(self, service: profile.Service, port: int | None = None) -> Client:
        """A client of one service: its VIP (IPv4 or IPv6), its port or the given one of its group."""
        assert self.segment
        return Client(self.segment, self.spec.vip_of(service), port or service.check_port, self.cacert)

    def vips_held(self, director: Machine) -> set[str]:
        """Which of the profile's VIPs (IPv4 and IPv6) are on the director's cluster NIC."""
        return self._vips_in(self._cluster_nic_addresses(director))

    def _cluster_nic_addresses(self, director: Machine) -> str:
        return director.succeed(f"ip -o addr show dev {self.spec.network.interface}")

    def _vips_in(self, addresses: str) -> set[str]:
        """The profile's VIPs found in `ip -o addr` output (all of it, or one line)."""
        return {str(v) for v in self.spec.vips if f" {v}/" in addresses}

    def holds_vip(self, director: Machine) -> bool:
        return str(self.spec.vip) in self.vips_held(director)

    def holds_every_vip(self, director: Machine) -> bool:
        return self.vips_held(director) == {str(v) for v in self.spec.vips}

    def vip_holders(self) -> list[Machine]:
        """The directors holding any VIP (they move together: two holders are a split, whichever
        VIPs each has); a crashed (unreachable) one holds nothing."""
        held = []
        for d in self.directors:
            try:
                if self.vips_held(d):
                    held.append(d)
            except Exception:  # noqa: BLE001 - a crashed director cannot answer
                pass
        return held

    def active_director(self, timeout: float = 120) -> Machine:
        """The one director holding the VIP (waits until exactly one does)."""
        def find():
            holders = self.vip_holders()
            return holders[0] if len(holders) == 1 else None
        return wait.until(find, timeout, "exactly one director to hold the VIP", interval=1)

    def revive(self, director: Machine) -> None:
        """Bring a crashed director back as a fresh heartbeat member, as a reboot would, in
        ~15 s instead of a ~100-150 s boot under TCG.

        It resumes with its link cut, so nothing its old instance still believes reaches the
        network; the stack's revive_script() clears what a reboot clears; then the link returns and
        heartbeat (and ldirectord, where it runs on both) start anew: the peer logs
        "Heartbeat restart on node ...", as after a reboot. Resuming without the cut is no
        recovery: heartbeat takes the old instance's return for a healed partition and
        restarts the holder. Use wait_rejoined() after it.
        """
        director.block()
        director.resume()
        director.wait_for_agent(60)
        director.succeed(self.stack.revive_script(time.time()))
        director.unblock()
        director.systemctl("start " + " ".join(self.stack.units), 180)

    def view(self, director: Machine) -> stack.View | None:
        """How `director` sees the pair (None while its stack cannot say)."""
        return self.stack.view(director, self.standby_of(director))

    def health(self, director: Machine) -> dict | None:
        """What the director's HA watchdog last wrote (HAWATCH_HEALTH); None before its first
        report, or when the agent's output came garbled (ask again)."""
        rc, out = director.execute(f"cat {contract.HAWATCH_HEALTH}")
        try:
            return json.loads(out) if rc == 0 else None
        except ValueError:
            return None

    def stack_starting(self, director: Machine) -> bool:
        """Its watchdog still counts the stack as starting (contract.HAWATCH_GRACE after a start),
        or has not reported yet (a boot): its state may yet change on its own (a VRRP backup whose
        timers ran late goes MASTER)."""
        health = self.health(director)
        return health is None or health.get("state") == "STARTING"

    def past_first_verdict(self, director: Machine) -> bool:
        """Its watchdog found the stack past its first verdict on the peer (hawatch.FirstVerdict:
        a heartbeat that has heard every node, or any stack up initdead + grace); False before
        the watchdog's first report."""
        health = self.health(director)
        return bool(health and health.get("verdict"))

    def ready_for_fault(self) -> bool:
        """The pair can answer a fault the way it is meant to: one holder, both stacks answering
        and in the pair, nothing moving, and each stack past its first verdict (a heartbeat
        restarted moments ago that has not heard every node still counts initdead before it can
        take anything over: a fault then is a second fault, not the one a step means to test)."""
        if not self._one_holder_in_pair(answering=True):
            return False
        return all(self.past_first_verdict(d) for d in self.directors)

    def wait_ready_for_fault(self, timeout: float | None = None) -> float:
        """Waits until ready_for_fault; how long that took. By default as long as the watchdog may
        take to restart a heartbeat left in "transition" (its vacancy limit), plus a takeover's
        limit and margin, plus a restarted stack's first verdict."""
        f = self.spec.failover
        timeout = timeout or f.takeover_limit + 60 + f.vacancy_limit + f.initdead_s + contract.HAWATCH_GRACE
        started = time.monotonic()
        wait.until(self.ready_for_fault, timeout, "the pair ready for the next fault (one holder, "
                   "both stacks past their first verdict)", interval=1)
        return time.monotonic() - started

    def wait_stacks_started(self, directors: list[Machine], timeout: float) -> None:
        wait.until(lambda: not any(self.stack_starting(d) for d in directors), timeout,
                   "every stack past its start-up")

    def wait_rejoined(self, director: Machine, timeout: float) -> None:
        """`director` is back in the pair (heartbeat: it sees its peer active)."""
        wait.until(lambda: getattr(self.view(director), "in_pair", False), timeout,
                   f"{director.name}: {self.stack.name} back in the pair")

    def page(self, node: profile.Node) -> str:
        """The index page `node` serves, as first boot renders it from the profile."""
        return render.node_files(self.spec, node, None)[f"{render.DOCROOT}/index.html"].content

    def all_serving(self) -> bool:
        """Every real server with a weight answers through the VIP (within two rounds)."""
        names = {n.name for n in self.spec.serving}
        return set(self.vip.servers(2 * self.spec.round)) == names

    def wait_all_serving(self, timeout: float) -> None:
        """Every real server answers through the VIP again: a fault's recovery is complete."""
        try:
            wait.until(self.all_serving, timeout, "every real server serving through the VIP")
        except wait.Timeout as e:
            raise wait.Timeout(f"{e}\n{self.serving_report()}") from None

    def serving_report(self) -> str:
        """Where requests stop, for a failure report: who answers through the VIP, each real
        server's check page straight from the client and its guest agent, each director's IPVS
        table (a bench once found every real server quiesced on both directors for 5 minutes)."""
        service = self.spec.web_service
        out = [f"through the VIP: {' '.join(map(str, self.vip.servers(self.spec.round)))}"]
        for node, vm in zip(self.spec.real_servers, self.real_servers, strict=True):
            assert self.segment  # as self.vip asserted above
            direct = Client(self.segment, node.address, service.port).get(f"/{service.request}")
            agent = "answers" if vm.agent.ping() else "DOES NOT ANSWER"
            out.append(f"[{node.name}] {service.request} straight: HTTP {direct.status} in {direct.seconds:.1f} s; "
                       f"guest agent {agent}")
        for vm in self.directors:
            try:
                table = vm.succeed("ipvsadm -L -n", timeout=20)
            except Exception as e:  # noqa: BLE001 - a report must not fail on a dead node
                table = f"unreachable: {e}"
            out += [f"[{vm.name}] {line}" for line in table.splitlines()]
        return "\n".join(out)

    def settled(self) -> bool:
        """Both directors are in the pair and neither is moving resources, exactly one holds
        the VIP, and every real server answers through it."""
        return self._one_holder_in_pair() and self.all_serving()

    def _one_holder_in_pair(self, answering: bool = False) -> bool:
        """Both directors in the pair (answering their status interface, if asked), neither
        moving resources, exactly one holding the VIP."""
        views = [self.view(d) for d in self.directors]
        if any(v is None or not v.in_pair or v.busy or (answering and not v.answering) for v in views):
            return False
        return sum(v.holds_vip for v in views if v) == 1

    def wait_settled(self, timeout: float, steady: float = 10) -> None:
        """After a split brain heartbeat v1 gives up resources and restarts on both nodes, for
        over a minute: wait until the pair has stopped changing, not for a passing good moment."""
        wait.steady(self.settled, steady, timeout, "both directors settled with one VIP holder")

    def put_blob(self) -> bytes:
        """The file in-flight transfers download (the same on every real server); its bytes."""
        for web in self.real_servers:
            web.succeed(f"seq 1 {BLOB_LINES} > {render.DOCROOT}/blob.txt")
        return "".join(f"{i}\n" for i in range(1, BLOB_LINES + 1)).encode()

    def sync_entries(self, director: Machine, service: profile.Service | None = None) -> list[str]:
        """The connections to a service's VIP (the web service's by default) in `director`'s
        IPVS table (`ipvsadm -L -n -c`): on the standby, what the connection sync brought over."""
        service = service or self.spec.web_service
        vip = f"{render.bracketed(self.spec.vip_of(service))}:{service.check_port}"
        return [line for line in director.succeed("ipvsadm -L -n -c").splitlines() if vip in line.split()]

    def standby_of(self, active: Machine) -> Machine:
        return next(d for d in self.directors if d is not active)

    def pair_state(self) -> str:
        """One line per director for a failure report, read first: the VIPs it holds, whether
        its stack answers, what its watchdog last found, and the watchdog's and vip-takeover's
        last words (a CI log shows only part of a report: this part must say what broke)."""
        out = []
        for vm in self.directors:
            try:
                addrs = self._cluster_nic_addresses(vm)
                held = sorted(self._vips_in(addrs))
                answers = self.stack.answers(vm)
                health = vm.execute(f"cat {contract.HAWATCH_HEALTH}", timeout=10)[1].strip()
                said = vm.execute(f"journalctl -b --no-pager -o short-monotonic -n 12 -t {contract.HAWATCH_TAG} "
                                  "-t vip-takeover -t IPv6addr -t ResourceManager", timeout=20)[1]
            except Exception as e:  # noqa: BLE001 - a report must not fail on a dead node
                out.append(f"[{vm.name}] unreachable: {e}")
                continue
            out.append(f"[{vm.name}] holds {held or 'no VIP'}; {self.stack.name} "
                       f"{'answers' if answers else 'DOES NOT ANSWER'}; watchdog: {health or '(no health file)'}")
            out += [f"[{vm.name}]   {line.split(None, 1)[1]}" for line in addrs.splitlines() if self._vips_in(line)]
            out += [f"[{vm.name}]   {line}" for line in said.splitlines() if line.strip()]
        return "\n".join(out)

    def director_journals(self, lines: int = 25) -> str:
        """The stack's last journal lines per director, for a failure report;
        a crashed or unreachable director says so instead."""
        out = []
        for vm in self.directors:
            try:
                text = vm.succeed(f"journalctl -b --no-pager -o short-monotonic -n {lines} "
                                  f"{self.stack.journal_units()}; ipvsadm -L -n", timeout=20)
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
