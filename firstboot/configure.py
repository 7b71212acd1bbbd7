"""Turn this image into the node its seed ISO describes, once per instance-id.

Runs inside the image (appliance-firstboot.service), before networking and the cluster
services, using the same rendering code as ``python -m builder render``. Without a usable
seed the node still boots, says on the console what is wrong and how to fix it, and no
cluster service starts (they require /var/lib/appliance/configured).

``configure`` is the first-boot step; firstboot/ready.py (appliance-ready.service, after
multi-user.target) prints the line a harness waits for.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder import contract, profile, secret
from builder.errors import ApplianceError
from builder.files import File, write_atomic, write_tree
from builder.run import CommandError, run
from firstboot import state as applied

LABELS = contract.SEED_LABELS
STATE = Path(contract.STATE_DIR)
IMAGE_ROLE = Path("/usr/lib/appliance/role")
NOT_CONFIGURED = contract.NOT_CONFIGURED
HOW_TO_SEED = ("make one on the host with `python -m builder seed PROFILE --out DIR` and attach "
               "DIR/<node>.iso to this machine as a disk or CD-ROM, then reboot")


class SeedError(ApplianceError):
    """The seed is missing or unusable; the message says what to fix."""


@dataclass(frozen=True)
class Seed:
    instance_id: str
    cluster: profile.Cluster
    node: profile.Node
    secret: str | None
    host_key: tuple[str, str] | None = None   # (private, public): the profile gives SSH keys
    data: dict | None = None                   # the appliance.json it came from
    tls: tuple[str, str] | None = None        # (cert, key; no key on a director): the profile serves TLS


def _meta_data(text: str) -> dict[str, str]:
    """The flat `key: value` lines of NoCloud meta-data (values may be JSON-quoted)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "#")):
            value = value.strip()
            values[key.strip()] = json.loads(value) if value.startswith('"') else value
    return values


def read_seed(directory: Path, image_role: str | None) -> Seed:
    """Validate the seed's files; every problem becomes one SeedError saying what to fix."""
    try:
        meta = _meta_data((directory / "meta-data").read_text())
        data = json.loads((directory / contract.SEED_APPLIANCE).read_text())
    except (OSError, ValueError) as e:
        raise SeedError(f"the seed ISO is not an appliance seed ({e}); {HOW_TO_SEED}") from None
    instance = meta.get("instance-id")
    if not instance:
        raise SeedError(f"meta-data has no instance-id; {HOW_TO_SEED}")
    return seed_from(data, instance, image_role)


def seed_from(data: dict, instance: str, image_role: str | None) -> Seed:
    """A seed's appliance.json (from the ISO, or pushed by `builder apply`) as a Seed."""
    if data.get("format") != contract.SEED_FORMAT:
        raise SeedError(f"{contract.SEED_APPLIANCE} format {data.get('format')!r} is not supported by this "
                        f"image (expected {contract.SEED_FORMAT}): rebuild the seed with the builder of this image")
    try:
        cluster = profile.parse(data.get("cluster") or {}, f"seed {contract.SEED_APPLIANCE}")
    except profile.ProfileError as e:
        raise SeedError(f"{e}\nFix the profile, then remake the seed") from None
    try:
        node = cluster.node(str(data.get("node")))
    except KeyError:
        raise SeedError(f"node {data.get('node')!r} is not in cluster {cluster.name}") from None
    if image_role and node.role != image_role:
        raise SeedError(f"this is a {image_role} image but the seed is for {node.role} {node.name}: "
                        "attach that node's seed, or boot the image of its role")
    key = data.get("secret")
    if node.is_director:
        found = secret.problems(key) if isinstance(key, str) else ["it is missing"]
        if found:
            raise SeedError(f"the heartbeat secret on the seed is unusable: {'; '.join(found)}")
    host_key = None
    if cluster.access.ssh:
        hk = data.get("ssh_host_key")
        if not (isinstance(hk, dict) and isinstance(hk.get("private"), str) and isinstance(hk.get("public"), str)
                and hk["private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")):
            raise SeedError("the profile gives SSH keys but the seed has no usable host key for "
                            f"{node.name}: remake the seed with `python -m builder seed`")
        host_key = (hk["private"], hk["public"])
    tls = None
    if cluster.serves_tls:  # a director gets the certificate alone (its checks trust it)
        t = data.get("tls")
        if not (isinstance(t, dict) and isinstance(t.get("cert"), str) and "BEGIN CERTIFICATE" in t["cert"]
                and (node.is_director or (isinstance(t.get("key"), str) and "PRIVATE KEY-----" in t["key"]))):
            raise SeedError(f"the profile serves TLS on {contract.TLS_PORT} but the seed has no usable "
                            f"certificate for {node.name}: remake the seed with `python -m builder seed`")
        tls = (t["cert"], "" if node.is_director else t["key"])
    return Seed(instance, cluster, node, key if node.is_director else None, host_key, data, tls)


def stored(state: Path = STATE, image_role: str | None = None) -> tuple[dict, Seed]:
    """What this node runs now: its applied.json entry (first boot's seed, or `builder apply`'s)
    and the Seed it holds."""
    try:
        entry = applied.read(state)
    except (OSError, ValueError) as e:
        raise SeedError(f"this node has no applied configuration ({e}): it was never configured "
                        "from a seed, or by an image older than `builder apply`") from None
    return entry, seed_from(entry["data"], entry["instance"], image_role)


def files_for(seed: Seed) -> dict[str, File]:
    """The node's files. Jinja2 and the renderers are imported here, not at the top: a later
    boot (already configured) renders nothing, and under TCG that import is ~0.5 s of a
    booting VM's CPU, on the critical path (everything waits for first boot)."""
    from builder import render
    return render.node_files(seed.cluster, seed.node, seed.secret, seed.host_key, seed.tls)


def find_seed_device(wait: float = 10.0) -> str | None:
    """The block device labelled cidata, waiting a little for slow (CD-ROM) devices.

    blkid probes the kernel's devices itself, so a disk that is already there is found at
    once; only then is udev waited for, which under TCG takes ~10 s of first boot."""
    deadline = time.monotonic() + wait
    while True:
        for label in LABELS:
            # blkid exits 2 when no device has the label
            device = run(["blkid", "-c", "/dev/null", "-t", f"LABEL={label}", "-o", "device"],
                         check=False).stdout.split()
            if device:
                return device[0]
        if time.monotonic() > deadline:
            return None
        with contextlib.suppress(FileNotFoundError):
            run(["udevadm", "settle", "--timeout=5"], check=False)
        time.sleep(1)


@contextlib.contextmanager
def mounted(device: str):
    with tempfile.TemporaryDirectory(prefix="seed.") as mountpoint:
        run(["mount", "-o", "ro", device, mountpoint])
        try:
            yield Path(mountpoint)
        finally:
            run(["umount", mountpoint])


WANTS = Path(contract.UNIT_WANTS.lstrip("/"))
# Units first boot enables itself (the preset leaves them off): which depends on the profile
OWN_UNITS = {u: f"/lib/systemd/system/{u}" for u in ("ldirectord.service", contract.KEEPALIVED_UNIT,
                                                     contract.KEEPALIVED_CHECKERS_UNIT, *contract.OPTIONAL_UNITS)}


def units_for(cluster: profile.Cluster, node: profile.Node) -> set[str]:
    """What to switch on besides the preset: keepalived (VRRP and checkers) on keepalived directors, ldirectord's
    own unit where heartbeat runs it on both directors, sshd where the profile gives keys, the
    exporters and their firewall where it asks for metrics, nftables where directors mark
    port groups."""
    wanted = {contract.SSH_UNIT} if cluster.access.ssh else set()
    if cluster.logging.remote:
        wanted.add(contract.JOURNAL_UPLOAD_UNIT)
    if cluster.metrics.enabled:
        wanted |= {contract.NODE_EXPORTER_UNIT, contract.NFTABLES_UNIT}
        if not node.is_director:
            wanted.add(contract.APACHE_EXPORTER_UNIT)
    if not node.is_director:
        return wanted
    if cluster.fwmark_services:  # the port groups' marks (render.nftables_files)
        wanted.add(contract.NFTABLES_UNIT)
    if cluster.keepalived:
        return wanted | {contract.KEEPALIVED_UNIT, contract.KEEPALIVED_CHECKERS_UNIT}
    return wanted | ({"ldirectord.service"} if cluster.heartbeat.ldirectord_on_both else set())


def services(seed: Seed) -> tuple[str, ...]:
    """The units that must be active for the node to be ready."""
    if not seed.node.is_director:
        return (contract.APACHE_UNIT,)
    if seed.cluster.keepalived:
        return (contract.KEEPALIVED_CHECKERS_UNIT, contract.KEEPALIVED_UNIT, contract.APACHE_UNIT)
    return ("heartbeat.service", contract.APACHE_UNIT)


def set_units(seed: Seed, root: Path = Path("/")) -> set[str]:
    """Make (or remove) the links `systemctl enable` would make for OWN_UNITS. By hand: through
    systemd-sysv-install and update-rc.d (ldirectord has a SysV script) enabling cost two
    daemon-reloads, ~14 s of every first boot under TCG. Returns the units wanted."""
    wanted = units_for(seed.cluster, seed.node)
    for unit, target in OWN_UNITS.items():
        link = root / WANTS / unit
        link.unlink(missing_ok=True)
        if unit in wanted:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
    return wanted


def remove_other_stack(seed: Seed, root: Path = Path("/")) -> None:
    """A director re-seeded onto the other stack: its old configuration must not start it."""
    from builder import render  # only when rendering (files_for says why)
    for stack, paths in render.STACK_FILES.items():
        if stack != seed.cluster.stack:
            for path in paths:
                (root / path.lstrip("/")).unlink(missing_ok=True)


def nic_with_mac(mac: str, sys_net: Path = Path("/sys/class/net")) -> str | None:
    for dev in sorted(sys_net.iterdir()):
        with contextlib.suppress(OSError):
            if (dev / "address").read_text().strip().lower() == mac:
                return dev.name
    return None


def wait_for_nic(present: Callable[[], bool], wait: float = contract.NIC_WAIT) -> bool:
    """Whether the NIC `present` looks for shows up within `wait` seconds. First boot runs early,
    and on trixie the NIC's driver often is not bound yet (its sysctls do not exist, ifup
    fails): udev is waited for, again and again. One 30-s settle was not enough for a real
    server booting beside three others on two TCG cores (2026-12-03: "its NICs: lo", at 414 s
    into its boot); a NIC whose driver loads firmware can be as slow on metal."""
    deadline = time.monotonic() + wait
    while not present():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        run(["udevadm", "settle", f"--timeout={max(1, min(30, int(left)))}"], check=False)
        if not present():
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return True


def pin_nic(seed: Seed) -> None:
    """Name the NIC with the node's MAC as the cluster interface now: udev applies the .link
    file only from the next boot on, and networking starts right after this."""
    iface, mac = seed.cluster.network.interface, seed.node.mac
    assert mac, "pin_nic needs a node with a MAC"
    wait_for_nic(lambda: nic_with_mac(mac) is not None)
    dev = nic_with_mac(mac)
    if dev is None:
        raise SeedError(f"no NIC has the MAC {seed.node.mac} the profile pins {seed.node.name}'s "
                        "address to: fix mac in the profile (ip link shows this machine's MACs)")
    if dev != iface:
        run(["ip", "link", "set", "dev", dev, "down"])
        run(["ip", "link", "set", "dev", dev, "name", iface])


def apply_live(seed: Seed, root: Path = Path("/")) -> None:
    """What the files alone do not change in the running system: hostname, sysctls, the name
    of a NIC pinned by MAC."""
    Path("/proc/sys/kernel/hostname").write_text(seed.node.name)
    if seed.node.mac:
        pin_nic(seed)
    iface = seed.cluster.network.interface
    if not wait_for_nic(Path(f"/sys/class/net/{iface}").exists):
        raise SeedError(f"this machine has no NIC named {iface} (network.interface in the profile); "
                        "its NICs: " + ", ".join(sorted(p.name for p in Path("/sys/class/net").iterdir()))
                        + ". Set network.interface to one of them, or pin the NIC with mac")
    if seed.node.is_director:
        # net.ipv4.vs.* exist once ip_vs is loaded: loading it here, instead of waiting for
        # systemd-modules-load and its twelve schedulers, takes ~3 s off a director's first boot
        run(["modprobe", "ip_vs"])
    sysctl = contract.SYSCTL_DIRECTOR if seed.node.is_director else contract.SYSCTL_REALSERVER
    run(["sysctl", "-q", "-p", root / sysctl.lstrip("/")])


def say(line: str) -> None:
    print(line, flush=True)


def _seen(state: Path) -> set[str]:
    path = applied.under(state, contract.SEEDS_SEEN)
    return set(path.read_text().split()) if path.exists() else set()


def configure(state: Path = STATE, root: Path = Path("/")) -> int:
    """Configure from the newest word: a seed `builder apply --reboot` staged, else an attached
    seed not taken before; an attached seed already taken (left in the drive after an apply)
    changes nothing."""
    marker = state / "configured"
    image_role = IMAGE_ROLE.read_text().strip() if IMAGE_ROLE.exists() else None
    staged = applied.under(state, contract.NEXT_SEED)
    if staged.exists():
        try:
            entry = json.loads(staged.read_text())
            seed = seed_from(entry["data"], entry["instance"], image_role)
        except (ValueError, KeyError, SeedError) as e:
            say(f"appliance: ignoring the staged seed {staged} ({e})")
            staged.unlink()
        else:
            return _guarded(lambda: _configure(seed, "the seed `builder apply --reboot` staged",
                                               marker, state, root, staged), marker)
    device = find_seed_device()
    if device is None:
        if marker.exists():
            say(f"appliance: no seed attached; keeping the configuration of {marker.read_text().strip()}")
            return _guarded(lambda: _keep(state, root, image_role), marker)
        say(f"{NOT_CONFIGURED}: no seed ISO (volume label {contract.SEED_LABEL}) found; {HOW_TO_SEED}. "
            "No cluster service was started.")
        return 1
    try:
        with mounted(device) as directory:
            seed = read_seed(directory, image_role)
    except (SeedError, CommandError) as e:
        marker.unlink(missing_ok=True)
        detail = e.stderr.strip() if isinstance(e, CommandError) else e
        say(f"{NOT_CONFIGURED}: seed on {device}: {detail}. No cluster service was started.")
        return 1
    current = marker.read_text().strip() if marker.exists() else None
    if current and current != seed.instance_id and seed.instance_id in _seen(state):
        say(f"appliance: the seed on {device} ({seed.instance_id}) was taken before; keeping the "
            f"configuration applied since ({current})")
        return _guarded(lambda: _keep(state, root, image_role), marker)
    return _guarded(lambda: _configure(seed, device, marker, state, root), marker)


def _guarded(step, marker: Path) -> int:
    try:
        return step()
    except SeedError as e:
        marker.unlink(missing_ok=True)
        say(f"{NOT_CONFIGURED}: {e}. No cluster service was started.")
        return 1


def _keep(state: Path, root: Path, image_role: str | None) -> int:
    """A later boot: the files are there (else rendered again); redo what does not survive a reboot."""
    if not applied.applied_path(state).exists():
        return 0
    entry, seed = stored(state, image_role)
    if applied.rendered_here(entry, root):
        apply_live(seed, root)
        return 0
    # the state survived and the root did not: an update's fresh root (issue 25), or a root
    # older than its stamp. The node is the same; its files come back from what it runs.
    files = _render(seed, state, root)
    applied.mark(entry, root)
    say(f"appliance: rendered {seed.node.name}'s {len(files)} files again on this root from its "
        f"applied configuration ({entry['by']}, instance {seed.instance_id})")
    return 0


def node_facts(seed: Seed) -> dict[str, object]:
    """node.json: what the image's own services (ready, the HA watchdog) read of this node."""
    node: dict[str, object] = {"node": seed.node.name, "role": seed.node.role, "address": str(seed.node.address),
                               "interface": seed.cluster.network.interface, "instance": seed.instance_id,
                               "services": list(services(seed))}
    if seed.node.is_director:  # what the HA watchdog (firstboot/hawatch.py) watches and clears
        failover = seed.cluster.failover
        node.update(stack=seed.cluster.stack, vips=[str(v) for v in seed.cluster.vips],
                    prefixlen=seed.cluster.network.prefixlen, deadtime=failover.deadtime_s,
                    prefixlen6=seed.cluster.network.prefix6.prefixlen if seed.cluster.network.prefix6 else None,
                    peer=seed.cluster.peer(seed.node).name, peer_address=str(seed.cluster.peer(seed.node).address),
                    duplicate_limit=failover.duplicate_limit, initdead=failover.initdead_s,
                    witnesses=[str(n.address) for n in seed.cluster.real_servers],
                    vacancy_limit=failover.vacancy_limit, metrics=seed.cluster.metrics.enabled)
        if seed.cluster.link:  # the deaf-stack check asks the link whether the peer is alive
            node.update(link_interface=seed.cluster.link.interface,
                        peer_link_address=str(seed.cluster.peer(seed.node).link_address))
    return node


def _render(seed: Seed, state: Path, root: Path) -> dict[str, File]:
    """Write the node's files, make them live, enable its units and say what it is (node.json)."""
    files = files_for(seed)
    remove_other_stack(seed, root)
    write_tree(files, root)
    apply_live(seed, root)
    for unit in sorted(set_units(seed, root)):
        # this boot's unit graph predates the link: start it now (before sysinit.target)
        run(["systemctl", "start", "--no-block", unit])
    state.mkdir(parents=True, exist_ok=True)
    write_atomic(applied.under(state, contract.NODE_JSON), json.dumps(node_facts(seed)) + "\n")
    return files


def _configure(seed: Seed, source: str, marker: Path, state: Path, root: Path,
               staged: Path | None = None) -> int:
    if marker.exists() and marker.read_text().strip() == seed.instance_id:
        say(f"appliance: {seed.node.name} already configured for {seed.instance_id}")
        # the stack's unit links were made when it was configured
        if applied.applied_path(state).exists():
            return _keep(state, root, seed.node.role)
        apply_live(seed, root)
        return 0
    marker.unlink(missing_ok=True)  # half-configured must never look configured
    files = _render(seed, state, root)
    applied.write(state, seed.instance_id, seed.data, "apply --reboot" if staged else "seed", root)
    if staged is None:
        write_atomic(applied.under(state, contract.SEEDS_SEEN),
                     "".join(f"{i}\n" for i in sorted(_seen(state) | {seed.instance_id})))
    write_atomic(marker, seed.instance_id + "\n")  # last: configured only when complete
    if staged is not None:
        staged.unlink()
    say(f"appliance: configured {seed.node.name} ({seed.node.role}, {seed.node.address}) "
        f"from {source}: {len(files)} files, instance {seed.instance_id}")
    return 0


def main(argv: list[str]) -> int:
    if argv != ["configure"]:
        print("usage: python3 -m firstboot.configure configure", file=sys.stderr)
        return 2
    os.umask(0o022)
    return configure()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
