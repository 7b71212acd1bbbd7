"""Day 2 on a running cluster over SSH: `builder status`, `apply`, `drain`, `undrain`.

What a node runs is its applied.json (`appliance config`); `apply` compares the new profile with
what the directors run (builder/plan.py), renders each node's files here with first boot's own
code and pushes them with the node's new seed data (`appliance apply` writes what differs and
signals ldirectord, keepalived or sshd), then waits until both directors' IPVS tables show it. Each director
is asked through one `appliance session` (remote.Session), started with the watch on its table at
the outset: one Python start per director for the whole change, not three in a row. Order: the standby
director, then the active one, then the real servers. A real server leaving is drained first:
weight 0 everywhere (established connections carry on, new ones go elsewhere) until the active
director counts none of its connections, or the drain timeout; only then is it removed, because
IPVS drops the packets of a connection whose real server is gone.

`apply --reboot` does what cannot change live: each node gets its new seed staged
(`appliance stage`) and reboots, one at a time, standby first, each back in service before the
next.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import subprocess
import threading
import time
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path

from builder import contract, plan, profile, remote, render, secret, seed
from builder.errors import ApplianceError
from builder.profile import Cluster, Node
from builder.remote import Reach
from firstboot.hawatch import claims_vip
from firstboot.status import from_proc, parse_ipvs, service_dict

POLL = 0.25  # seconds between looks at the directors' tables
BOOT_ID = "/proc/sys/kernel/random/boot_id"  # new every boot: tells a rebooted node from one going down
# While apply waits, each director prints its IPVS table this often (a bounded loop on the
# node): a change is seen a tenth of a second after it lands, not an SSH round per look later
WATCH_EVERY = 0.1
TABLE_END = "-- end of table --"
SHOW_TIMEOUT = 60  # seconds both directors may take to show a pushed change


class Day2Error(ApplianceError):
    """A running cluster that cannot take the change: unreachable, disagreeing, refusing."""


def load_keys(cluster: Cluster, profile_path: Path, secrets_dir: Path) -> seed.Keys:
    """The keys a running cluster was seeded with (a new node's host key is made now)."""
    if secret.load_or_create(cluster, profile_path, secrets_dir, create=False) is None:
        raise Day2Error(f"no secret for cluster {cluster.name} under {secrets_dir}: apply changes "
                        "a cluster seeded from this directory", hint="pass --secrets DIR")
    return seed.Keys.gather(cluster, profile_path, secrets_dir, create=False)


def change(keys: seed.Keys, old: Cluster, new: Cluster, name: str, layout: int = contract.FILE_LAYOUT) -> dict:
    """`appliance apply`'s input for one node: new seed data, the files (for the node image's
    file layout), what goes."""
    files = render.for_layout(keys.files(new, name), layout)
    from firstboot.configure import units_for  # which optional units (sshd, exporters) run
    node = new.node(name)
    return {"data": seed.appliance(new, node, keys),
            "files": {p: [f.content, f.mode] for p, f in files.items()},
            "removed": [p for p in render.for_layout(keys.files(old, name), layout) if p not in files],
            "units": sorted(units_for(new, node) & set(contract.OPTIONAL_UNITS))}


@dataclasses.dataclass(frozen=True)
class Running:
    """What the directors run (they agree), which of them holds a VIP now, and each one's file
    layout (contract.FILE_LAYOUT; 1 where the image says none)."""
    cluster: Cluster
    holders: frozenset[str]
    layouts: tuple[tuple[str, int], ...] = ()

    def directors_in_order(self) -> list[Node]:
        """The standby first, the active one last."""
        return sorted(self.cluster.directors, key=lambda d: d.name in self.holders)


def _config(session: remote.Session) -> str | remote.RemoteError:
    try:
        return session.ask("config")
    except remote.RemoteError as e:
        return e


def running(cluster: Cluster, reach: Reach, asked: dict[str, remote.Session] | None = None) -> Running:
    """Both directors asked (`appliance config`, through their sessions if given); they must
    agree (a half-applied change is named)."""
    found: dict[str, dict | Exception] = {}
    if asked:
        with concurrent.futures.ThreadPoolExecutor(len(asked)) as pool:
            said = dict(zip(asked, pool.map(_config, asked.values()), strict=True))
    else:
        said = remote.on_nodes(cluster.directors, reach, f"{contract.APPLIANCE_CLI} config")
    for name, out in said.items():
        try:
            found[name] = out if isinstance(out, Exception) else json.loads(out)
        except ValueError as e:
            found[name] = e
    configs = {n: c["cluster"] for n, c in found.items() if isinstance(c, dict)}
    holders = frozenset(n for n, c in found.items() if isinstance(c, dict) and c.get("holds"))
    if not configs:
        raise Day2Error("no director answered `appliance config`: " + "; ".join(str(e) for e in found.values()))
    first = next(iter(configs.values()))
    if any(c != first for c in configs.values()) or len(configs) < len(found):
        raise Day2Error("the directors do not run the same configuration ("
                        + ", ".join(f"{n}: {'differs' if isinstance(c, dict) else c}" for n, c in found.items())
                        + "): a change was cut short", hint="apply again to make them agree")
    layouts = tuple((n, int(c.get("layout", 1))) for n, c in found.items() if isinstance(c, dict))
    return Running(profile.parse(first, "the directors' applied configuration"), holders, layouts)


def tables(cluster: Cluster, reach: Reach) -> dict[str, dict]:
    """Each director's IPVS table (`ipvsadm -L -n`, read here: no Python on the node), in
    `appliance status --json`'s shape; a director that did not answer is left out."""
    return {n: {"services": [service_dict(v) for v in parse_ipvs(out)]}
            for n, out in remote.on_nodes(cluster.directors, reach, "ipvsadm -L -n").items() if isinstance(out, str)}


class TableWatch:
    """Each director's IPVS table as it changes: one Python loop per director prints
    /proc/net/ip_vs every WATCH_EVERY s (no process per look: an `ipvsadm` and a `sleep` ten
    times a second slowed keepalived's own restart). Started before the pushes, so the loops
    are running by the time a change lands; `wait` judges the tables once every director has
    shown one."""

    def __init__(self, cluster: Cluster, reach: Reach, seconds: float):
        loop = (f"import sys,time\nfor i in range({int(seconds / WATCH_EVERY) + 1}):\n"
                f" sys.stdout.write(open('/proc/net/ip_vs').read()+'{TABLE_END}\\n'); sys.stdout.flush()"
                f"; time.sleep({WATCH_EVERY})")
        self.latest: dict[str, dict] = {}
        self.changed = threading.Condition()
        self.procs = {d.name: remote.stream(d, reach, f'python3 -c "{loop}"') for d in cluster.directors}
        for item in self.procs.items():
            threading.Thread(target=self._read, args=item, daemon=True).start()

    def _read(self, name: str, proc: subprocess.Popen) -> None:
        block: list[str] = []
        for line in proc.stdout or ():
            if line.rstrip("\n") != TABLE_END:
                block.append(line)
                continue
            with self.changed:
                self.latest[name] = {"services": [service_dict(v) for v in parse_ipvs(from_proc("".join(block)))]}
                self.changed.notify_all()
            block = []
        with self.changed:
            self.changed.notify_all()

    def wait(self, test: Callable[[dict[str, dict]], bool], timeout: float, what: str) -> float:
        """Until `test` holds for the latest tables; the seconds it took."""
        started = time.monotonic()

        def heard() -> bool:  # every director's table, or its stream ended (unreachable)
            return bool(self.latest) and all(n in self.latest or p.poll() is not None for n, p in self.procs.items())
        with self.changed:
            while not (heard() and test(dict(self.latest))):
                left = started + timeout - time.monotonic()
                if left <= 0 or all(p.poll() is not None for p in self.procs.values()):
                    raise Day2Error(f"{what}: not after {time.monotonic() - started:.0f} s")
                self.changed.wait(min(left, 1.0))
        return time.monotonic() - started

    def close(self) -> None:
        for p in self.procs.values():
            p.kill()
            p.wait()

    def __enter__(self) -> TableWatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def with_draining(new: Cluster, old: Cluster) -> Cluster:
    """`new`, keeping the real servers it removes at weight 0 until they are drained."""
    leaving = [dataclasses.replace(r, weight=0) for r in old.real_servers if r.name in plan.drained(old, new)]
    return dataclasses.replace(new, real_servers=new.real_servers + tuple(leaving))


def reweighted(cluster: Cluster, name: str, weight: int) -> Cluster:
    return dataclasses.replace(cluster, real_servers=tuple(
        dataclasses.replace(r, weight=weight) if r.name == name else r for r in cluster.real_servers))


def _address(real_server: dict) -> str:
    """A real server's address as `appliance status` gives it ("[2001:0db8::...]" from an older
    image's /proc reading), written as Python writes it: no brackets, IPv6 compressed."""
    return str(ip_address(real_server["address"].strip("[]")))


def ipvs_view(status: dict) -> dict[str, int]:
    """A director's real servers (address -> weight, `_address`) in its IPVS table, the fallback
    (loopback) left out."""
    return {_address(r): r["weight"] for v in status.get("services", []) for r in v["real_servers"]
            if not ip_address(_address(r)).is_loopback}


def addresses(cluster: Cluster, node: Node) -> list[str]:
    """Where IPVS sends a real server's connections: its IPv4 address, and its IPv6 one when
    the profile has IPv6 VIPs."""
    return [str(node.address)] + ([str(node.address6)] if node.address6 and cluster.vips6 else [])


def shows(cluster: Cluster, status: dict, exact: set[str]) -> bool:
    """This director's IPVS has every real server of `cluster` and no other, and the weights
    of those named in `exact` as the profile says (the others a checker may have quiesced)."""
    view = ipvs_view(status)
    want = {a: r.weight for r in cluster.real_servers for a in addresses(cluster, r)}
    return set(view) == set(want) and all(view[a] == r.weight for r in cluster.real_servers if r.name in exact
                                          for a in addresses(cluster, r))


def wait_until(what: str, test: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not test():
        if time.monotonic() - started > timeout:
            raise Day2Error(f"{what}: not after {timeout:.0f} s")
        time.sleep(POLL)
    return time.monotonic() - started


class Operation:
    """One `apply`, `drain` or `undrain`: the cluster as the profile says, how to reach it,
    the keys to re-seed with, and where progress goes (one line per step, with its time)."""

    def __init__(self, cluster: Cluster, reach: Reach, keys: seed.Keys, say: Callable[[str], None] = print):
        # checked as the directors will read it back: a cluster built in code (not parsed from a
        # profile) once applied a checkinterval ldirectord cannot hold, and every later apply
        # failed to read the running configuration
        profile.parse(profile.to_dict(cluster), "the configuration to apply")
        self.cluster, self.reach, self.keys, self.say = cluster, reach, keys, say
        self.started = time.monotonic()
        self.shown_after: float | None = None  # seconds from start to both directors showing it

    def _t(self) -> str:
        return f"[{time.monotonic() - self.started:5.1f} s]"

    def push(self, old: Cluster, target: Cluster, nodes: list[Node], at_once: bool = False,
             asked: dict[str, remote.Session] | None = None, layouts: dict[str, int] | None = None) -> None:
        """`appliance apply` on each node (through its session if it has one), in order
        (directors), or all at once (real servers); each in its image's file layout."""
        def one(node: Node) -> None:
            layout = (layouts or {}).get(node.name, contract.FILE_LAYOUT)
            stdin = json.dumps(change(self.keys, old, target, node.name, layout))
            out = json.loads(asked[node.name].ask("apply", stdin) if asked and node.name in asked else
                             remote.run(node, self.reach, f"{contract.APPLIANCE_CLI} apply", stdin=stdin))
            told = f", reloaded {', '.join(out['reloaded'])}" if out["reloaded"] else ""
            self.say(f"{self._t()} {node.name}: {len(out['written']) + len(out['removed'])} files changed{told}")
        if at_once and nodes:
            with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(one, nodes))
        else:
            for node in nodes:
                one(node)

    def directors_show(self, watch: TableWatch, target: Cluster, exact: set[str],
                       timeout: float = SHOW_TIMEOUT) -> float:
        """Wait until every director with an IPVS table shows `target`, and as many as should have
        one (both, where the standby balances too: a table emptied by a restart in progress is not
        "shown"); the time since start."""
        loaded = len(target.directors) if target.failover.balances_on_both else 1

        def ok(latest: dict[str, dict]) -> bool:
            found = [t for t in latest.values() if t["services"]]
            return len(found) >= loaded and all(shows(target, t, exact) for t in found)
        watch.wait(ok, timeout, "the directors' IPVS tables showing the change")
        self.shown_after = time.monotonic() - self.started
        self.say(f"{self._t()} both directors' IPVS tables show it")
        return self.shown_after

    def wait_drained(self, target: Cluster, names: list[str], timeout: float) -> None:
        draining = {a for n in names for a in addresses(target, target.node(n))}

        def active() -> int:
            return sum(r["active"] for t in tables(target, self.reach).values() for v in t["services"]
                       for r in v["real_servers"] if _address(r) in draining)
        try:
            took = wait_until(f"draining {', '.join(names)}", lambda: active() == 0, timeout)
            self.say(f"{self._t()} {', '.join(names)}: no active connection left after {took:.1f} s")
        except Day2Error:
            self.say(f"{self._t()} {', '.join(names)}: drain timeout ({timeout:.0f} s) passed with "
                     f"{active()} connections active; removing anyway")

    def change_directors(self, now: Running, new: Cluster, drain_timeout: float,
                         asked: dict[str, remote.Session] | None = None, watch: TableWatch | None = None) -> float:
        """Drain what leaves, then make `new` live on both directors, standby first. `watch`:
        one already started (with the sessions: its Python start off the change's path)."""
        old, order = now.cluster, now.directors_in_order()
        exact = {r.name for r in new.real_servers
                 if r.name not in {o.name for o in old.real_servers} or old.node(r.name).weight != r.weight}
        leaving, before, layouts = plan.drained(old, new), old, dict(now.layouts)
        if leaving:
            before = with_draining(new, old)
            self.push_and_show(old, before, order, exact | set(leaving), asked, watch, layouts)
            watch = None  # a drain may outlast its loop: the removal gets a watch of its own
            self.wait_drained(before, leaving, drain_timeout)
        return self.push_and_show(before, new, order, exact, asked, watch, layouts)

    def push_and_show(self, old: Cluster, target: Cluster, order: list[Node], exact: set[str],
                      asked: dict[str, remote.Session] | None, watch: TableWatch | None,
                      layouts: dict[str, int] | None = None) -> float:
        with contextlib.ExitStack() as stack:
            if watch is None:
                watch = stack.enter_context(TableWatch(target, self.reach, SHOW_TIMEOUT))
            self.push(old, target, order, asked=asked, layouts=layouts)
            return self.directors_show(watch, target, exact)

    def apply(self, drain_timeout: float = contract.DRAIN_TIMEOUT, dry_run: bool = False) -> list[plan.Change]:
        with remote.sessions(self.cluster.directors, self.reach) as asked, \
                TableWatch(self.cluster, self.reach, SHOW_TIMEOUT) as watch:
            changes, old = self._apply(drain_timeout, dry_run, asked, watch)
        if changes and not dry_run:
            self.push(old, self.cluster, list(self.cluster.real_servers), at_once=True)
            self.say(f"applied {len(changes)} changes; the directors showed them {self.shown_after:.1f} s "
                     "after apply started")
        return changes

    def _apply(self, drain_timeout: float, dry_run: bool, asked: dict[str, remote.Session],
               watch: TableWatch) -> tuple[list[plan.Change], Cluster]:
        """The directors' part of apply, asked through their sessions, their tables watched
        from the start."""
        now = running(self.cluster, self.reach, asked)
        old = now.cluster
        changes = plan.diff(old, self.cluster)
        self.say(f"{self._t()} read what {', '.join(d.name for d in now.directors_in_order())} run "
                 f"(holding the VIPs: {', '.join(sorted(now.holders)) or 'neither'})")
        for c in changes:
            self.say(f"  {c}")
        if not changes:
            self.say("nothing to change: the cluster runs this profile")
            return changes, old
        refused = plan.refusal(changes)
        if refused:
            raise Day2Error(refused)
        if not dry_run:
            self.change_directors(now, self.cluster, drain_timeout, asked, watch)
        return changes, old

    def set_weight(self, name: str, weight: int, drain_timeout: float) -> None:
        """drain (weight 0, then wait for its connections to end) and undrain."""
        with remote.sessions(self.cluster.directors, self.reach) as asked:
            self._set_weight(name, weight, drain_timeout, asked)

    def _set_weight(self, name: str, weight: int, drain_timeout: float, asked: dict[str, remote.Session]) -> None:
        now = running(self.cluster, self.reach, asked)
        old = now.cluster
        try:
            node = old.node(name)
        except KeyError:
            raise Day2Error(f"{name} is not a real server of the running cluster "
                            f"({', '.join(r.name for r in old.real_servers)})") from None
        if node.is_director:
            raise Day2Error(f"{name} is a director: drain takes real servers out of service")
        new = reweighted(old, name, weight)
        if new == old:
            self.say(f"{name} already has weight {weight}")
            return
        self.change_directors(now, new, drain_timeout, asked)
        if weight == 0:
            self.wait_drained(new, [name], drain_timeout)

    def reboot(self, timeout: float = contract.BOOT_TIMEOUT) -> None:
        """Re-seed and reboot one node at a time, standby director first, each back before
        the next: what cannot change live. Reached at its running address, verified by name."""
        now = running(self.cluster, self.reach)
        old = now.cluster
        order = [*now.directors_in_order(),
                 *[r for r in old.real_servers if r.name in {n.name for n in self.cluster.real_servers}]]
        for was in order:
            node = self.cluster.node(was.name)
            files = seed.seed_files(self.cluster, node, self.keys)
            instance = seed.instance_of(files)
            entry = {"instance": instance, "data": json.loads(files[contract.SEED_APPLIANCE])}
            remote.run(was, self.reach, f"{contract.APPLIANCE_CLI} stage", stdin=json.dumps(entry))
            remote.run(was, self.reach, "systemd-run --on-active=1 systemctl reboot")
            remote.forget(was, self.reach)  # its shared connection dies with it
            self.say(f"{self._t()} {node.name}: rebooting into {instance}")
            time.sleep(5)
            took = wait_until(f"{node.name} back with {instance}", functools.partial(self._back, node, instance),
                              timeout)
            self.say(f"{self._t()} {node.name}: back after {took:.0f} s")

    def _verified(self, bundle_dir: Path, before: str) -> str:
        """The bundle's version, once its signature (the update key the seeds name) and checksums hold."""
        from builder import bundle
        if not self.keys.update_key:
            raise Day2Error("no update key in the secrets directory: `python -m builder bundle` makes it")
        try:
            return bundle.verify(bundle_dir, self.keys.update_key)
        except bundle.BundleError as e:
            raise Day2Error(f"refused before touching {before}: {e}") from None

    def _node(self, name: str) -> Node:
        try:
            return self.cluster.node(name)
        except KeyError:
            raise Day2Error(f"no node {name!r} in the profile; its nodes: "
                            f"{', '.join(n.name for n in self.cluster.nodes)}") from None

    def _send(self, node: Node, bundle_dir: Path, version: str) -> bool:
        """The bundle copied to the node's incoming directory, unless the node runs its version."""
        if self._version(node) == version:
            return False
        remote.send(node, self.reach, bundle_dir, contract.UPDATE_INCOMING)
        return True

    def _stage(self, node: Node, sent: concurrent.futures.Future) -> None:
        """Once its copy is there, the bundle staged on the node (`appliance update --stage`:
        checked and written into the other slot, booted by nothing yet) in a scope of its own
        (UPDATE_STAGE_LIMITS): the node serves meanwhile, maybe alone while its peer is drained,
        and a stage that filled the page cache of a 384-MiB guest timed out 12 of its requests."""
        if not sent.result():
            return
        out = remote.run(node, self.reach, f"systemd-run --quiet --scope {contract.UPDATE_STAGE_LIMITS} "
                         f"nice -n 19 {contract.APPLIANCE_CLI} update {contract.UPDATE_INCOMING} --stage",
                         timeout=900)
        for line in out.splitlines():
            self.say(f"{self._t()} {node.name}: {line}")

    def update(self, name: str, bundle_dir: Path, timeout: float = contract.BOOT_TIMEOUT,
               copying: concurrent.futures.Future | None = None, verified: str | None = None) -> float:
        """Install a signed bundle on one node and boot it (`appliance update`): checked here
        first against the update key the seeds name (unless the caller did: `verified`, its
        version), copied over SSH (or copied and staged by `copying`, started earlier: the install
        then checks the staged slot and writes its boot entry alone), installed into the slot the
        node does not run, rebooted, and waited for until the node runs the new version with its
        stack answering. A node back on its old version has rolled back by itself (the new one
        failed its health gate three times): that is an error. Returns seconds."""
        node = self._node(name)
        version = verified or self._verified(bundle_dir, name)
        incoming = contract.UPDATE_INCOMING
        if copying is not None:
            if not copying.done():
                self.say(f"{self._t()} {name}: waiting for {bundle_dir.name} to be copied and staged")
            copying.result()
        was = self._version(node, strict=True)
        if was == version:
            self.say(f"{self._t()} {name}: runs {version} already")
            return 0.0
        if copying is None:
            self.say(f"{self._t()} {name}: copying {bundle_dir.name} ({version}) to {incoming}")
            remote.send(node, self.reach, bundle_dir, incoming)
        out = remote.run(node, self.reach, f"{contract.APPLIANCE_CLI} update {incoming} --no-reboot; s=$?; "
                         f"rm -rf {incoming}; exit $s", timeout=900)
        for line in out.splitlines():
            self.say(f"{self._t()} {name}: {line}")
        # the boot this is: until the node runs another, an answer comes from the old system, still
        # shutting down (under load its sshd outlived a 5-s wait, and its old version read as a rollback)
        boot = remote.run(node, self.reach, f"cat {BOOT_ID}").strip()
        remote.run(node, self.reach, "systemd-run --on-active=1 systemctl reboot")
        remote.forget(node, self.reach)
        self.say(f"{self._t()} {name}: rebooting into {version}")
        started = time.monotonic()
        time.sleep(5)
        # a version that fails its gate boots UPDATE_TRIES times before the old one: each may take a boot
        wait_until(f"{name} back on any version", functools.partial(self._back_after, node, boot),
                   timeout * (contract.UPDATE_TRIES + 1))
        now = self._version(node)
        if now != version:
            raise Day2Error(f"{name} came back on {now}, not {version}: the new version failed its health gate "
                            "and the node rolled back by itself", hint=f"look at {name}'s journal of the failed "
                            "boots: `journalctl --list-boots`, then `journalctl -b -1`")
        took = time.monotonic() - started
        self.say(f"{self._t()} {name}: runs {version}, healthy after {took:.0f} s")
        return took

    def upgrade(self, bundles: Path, drain_timeout: float = contract.DRAIN_TIMEOUT,
                timeout: float = contract.BOOT_TIMEOUT) -> dict[str, float]:
        """Every node to the bundles in `bundles` (one ROLE-VERSION directory per image role),
        without an outage: real servers one at a time (drained, updated, weight back), the
        standby director, then the active one hands its VIPs over (the stack's hand_over) and is
        updated last. Both bundles are checked before any node is touched, and copied to every
        node at once in the background: a copy took 40-80 s a node under TCG and load (suite
        step 18), added up node after node. Stops at the first node that does not come back
        healthy (the copies on later nodes are left unused). Each copy is then staged on its node
        (`appliance update --stage`: the slot written, 28-57 s a node under TCG and load), one node
        at a time in the upgrade's order, so a node's turn arms it in seconds: four stages at once
        starved a 2-core TCG host and timed out 96 of 17771 requests (step 18). Seconds per node."""
        found = {role: sorted(bundles.glob(f"{image}-*")) for role, image in contract.IMAGE_OF.items()}
        for role, dirs in found.items():
            if len(dirs) != 1:
                named = ", ".join(d.name for d in dirs) or "none"
                raise Day2Error(f"{bundles}: one {contract.IMAGE_OF[role]}-VERSION bundle wanted, found {named}",
                                hint="`python -m builder bundle director webserver --out DIR` writes one of each")
        bundle_of = {n.name: found[n.role][0] for n in self.cluster.nodes}
        version = {d: self._verified(d, "any node") for d in {d for dirs in found.values() for d in dirs}}
        took: dict[str, float] = {}
        with (concurrent.futures.ThreadPoolExecutor(len(bundle_of)) as pool,
              concurrent.futures.ThreadPoolExecutor(1) as stager):
            self.say(f"{self._t()} copying the bundles to every node and staging them one node at a time, "
                     "in the background")
            copies = {name: pool.submit(self._send, self.cluster.node(name), d, version[d])
                      for name, d in bundle_of.items()}
            order = [*self.cluster.real_servers, *running(self.cluster, self.reach).directors_in_order()]
            staged = {n.name: stager.submit(self._stage, n, copies[n.name]) for n in order}

            def update(name: str) -> float:  # each bundle checked once above, not once per node
                return self.update(name, bundle_of[name], timeout, staged[name], version[bundle_of[name]])
            for server in self.cluster.real_servers:
                self.set_weight(server.name, 0, drain_timeout)
                took[server.name] = update(server.name)
                self.set_weight(server.name, server.weight, drain_timeout)
            standby, active = running(self.cluster, self.reach).directors_in_order()
            took[standby.name] = update(standby.name)
            self.hand_over(active, standby)
            took[active.name] = update(active.name)
        self.say(f"{self._t()} upgraded: " + ", ".join(f"{n} {t:.0f} s" for n, t in took.items()))
        return took

    def established(self, node: Node) -> set[tuple[str, ...]]:
        """The ESTABLISHED connections in a director's IPVS table (client, VIP, real server)."""
        out = remote.run(node, self.reach, "ipvsadm -L -n -c", timeout=30)
        return {tuple(p[3:6]) for line in out.splitlines() if len(p := line.split()) >= 6 and p[2] == "ESTABLISHED"}

    def wait_synced(self, active: Node, standby: Node, timeout: float = contract.SYNC_WAIT) -> set[tuple[str, ...]]:
        """Until the standby's IPVS table holds every connection established on the active when
        asked that still is (ended ones drop out): a standby just rebooted, as in an upgrade, learns
        a connection only at its next sync message, every 50 packets (a slow download's was a
        minute away), and a hand-over before that resets it (keepalived suite, step 18: 3 of 4
        downloads). What is still missing after `timeout` is returned and said, not waited for."""
        first = now = self.established(active)
        started = time.monotonic()
        while True:
            missing = (first & now) - self.established(standby)
            if not missing or time.monotonic() - started > timeout:
                break
            time.sleep(2)
            now = self.established(active)
        took = time.monotonic() - started
        if missing:
            self.say(f"{self._t()} {standby.name} still lacks {len(missing)} of {active.name}'s {len(first)} "
                     f"established connections after {took:.0f} s (no sync message for them yet): a hand-over "
                     "resets them")
        else:
            self.say(f"{self._t()} {standby.name} holds {active.name}'s {len(first)} established connections "
                     f"({took:.1f} s)")
        return missing

    def hand_over(self, active: Node, standby: Node, timeout: float = 60) -> float:
        """The active director gives every VIP to its peer now (heartbeat: the peer takes them
        first, then hb_standby; keepalived: FAULT through its track file, a priority-0 advert),
        until the peer's stack holds them all and the active none; first the peer holds the
        active's established connections (wait_synced)."""
        self.wait_synced(active, standby)
        failover = self.cluster.failover
        if failover.take_first:
            remote.run(standby, self.reach, failover.take_first)
        remote.run(active, self.reach, failover.hand_over)
        vips = {str(v) for v in self.cluster.vips}

        def moved() -> bool:
            found = remote.statuses(self.cluster, self.reach, (standby, active))
            peer, old = found[standby.name], found[active.name]
            return (isinstance(peer, dict) and vips <= set(peer.get("vips") or [])
                    and claims_vip(self.cluster.stack, str(peer.get("state")))
                    and isinstance(old, dict) and not old.get("vips"))
        took = wait_until(f"{standby.name}'s {self.cluster.stack} holding {', '.join(sorted(vips))} and "
                          f"{active.name} none", moved, timeout)
        self.say(f"{self._t()} {active.name} handed the VIPs over: {standby.name} holds them after {took:.1f} s")
        return took

    def _version(self, node: Node, strict: bool = False) -> str | None:
        """The version the node runs; None when it does not answer (strict: the error)."""
        try:
            out = remote.run(node, self.reach, f"{contract.APPLIANCE_CLI} config", timeout=10)
            return json.loads(out).get("version")
        except (remote.RemoteError, ValueError):
            if strict:
                raise
            return None

    def _back_after(self, node: Node, boot: str) -> bool:
        """The node answers over SSH from a boot other than `boot`, its health gate has passed
        in it (READY_UNIT, what boot assessment requires: a trial boot that will fail it answers
        over SSH first) and, a director, its stack answers. One command a look: each costs the
        node a process start, and this asks every few seconds while the node boots."""
        try:
            now, _, said = remote.run(node, self.reach, f"cat {BOOT_ID} && systemctl is-active --quiet "
                                      f"{contract.READY_UNIT} && {contract.APPLIANCE_CLI} status --json",
                                      timeout=15).partition("\n")
            status = json.loads(said)
        except (remote.RemoteError, ValueError):
            return False
        return now.strip() != boot and isinstance(status, dict) and (
            not node.is_director or status.get("answering") is True)

    def _back(self, node: Node, instance: str) -> bool:
        """The node answers over SSH and runs `instance`; a director's stack answers again."""
        try:
            s = json.loads(remote.run(node, self.reach, f"{contract.APPLIANCE_CLI} config", timeout=10))
            if s["instance"] != instance:
                return False
            status = remote.statuses(self.cluster, self.reach, (node,))[node.name]
            return isinstance(status, dict) and (not node.is_director or status.get("answering") is True)
        except (remote.RemoteError, ValueError, KeyError):
            return False
