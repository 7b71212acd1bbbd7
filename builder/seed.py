"""Per-node NoCloud seed ISOs (volume label ``cidata``), written with pycdlib.

The ISO carries cloud-init's standard files (``meta-data``, ``user-data``,
``network-config`` v2) and ``appliance.json``: the node's role, the validated cluster
and, on directors only, the heartbeat secret. First boot reads ``appliance.json``.
The same inputs give a byte-identical ISO: pycdlib's clock is frozen while it works.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pycdlib

from builder import contract, profile, render
from builder.profile import Cluster, Node

LABEL = contract.SEED_LABEL
APPLIANCE = contract.SEED_APPLIANCE
FORMAT = contract.SEED_FORMAT
EPOCH = contract.FALLBACK_EPOCH  # used when SOURCE_DATE_EPOCH is not set
ISO_NAMES = {"meta-data": "METADATA.;1", "user-data": "USERDATA.;1",
             "network-config": "NETWORKC.;1", APPLIANCE: "APPLIANC.JSO;1"}


HostKeys = dict[str, tuple[str, str]]  # node -> (private, public) SSH host key


@dataclass(frozen=True)
class Keys:
    """What a seed carries beside the profile, made once by the builder and kept in the secrets
    directory: the heartbeat secret (directors), each node's SSH host key (where the profile gives
    operators keys), the cluster's TLS certificate (where a service serves TLS) and the public half
    of the update key a node trusts bundles from (builder/bundle.py)."""
    secret: str | None
    host_keys: HostKeys | None = None
    tls: tuple[str, str] | None = None
    update_key: str | None = None

    @classmethod
    def gather(cls, cluster: Cluster, profile_path: Path, secrets_dir: Path, create: bool = True,
               say: Callable[[str], None] = lambda line: None) -> Keys:
        """The keys of `cluster` under `secrets_dir`, those missing made (with `create`: a new
        cluster; without, only a new node's host key: a running cluster's secret is never remade)."""
        from builder import bundle, hostkeys, secret, tls
        key = secret.load_or_create(cluster, profile_path, secrets_dir, create)
        host_keys = None
        if cluster.access.ssh:  # made once per node and kept; known_hosts for the operator's first ssh
            made = hostkeys.load_or_create(cluster, secrets_dir)
            host_keys = {name: (k.private, k.public) for name, k in made.items()}
            known = hostkeys.write_known_hosts(cluster, made, secrets_dir)
            say(f"{known}: the nodes' host keys (ssh -o UserKnownHostsFile={known} root@NODE)")
        made_tls = tls.load_or_create(cluster, secrets_dir)
        if made_tls:
            say(f"{tls.cert_path(cluster, secrets_dir)}: the real servers' TLS certificate (curl --cacert it)")
        update = bundle.signing_key(secrets_dir).with_suffix(".pub").read_text().strip()
        return cls(key, host_keys, made_tls, update)

    def files(self, cluster: Cluster, name: str) -> dict[str, render.File]:
        """What first boot would write on node `name` of `cluster` (none: not in it)."""
        try:
            node = cluster.node(name)
        except KeyError:
            return {}
        host_key = self.host_keys.get(name) if self.host_keys else None
        return render.node_files(cluster, node, self.secret, host_key, self.tls)


def appliance(cluster: Cluster, node: Node, keys: Keys) -> dict:
    secret, host_keys, tls = keys.secret, keys.host_keys, keys.tls
    data: dict = {"format": FORMAT, "node": node.name, "role": node.role,
                  "cluster": profile.to_dict(cluster)}
    if node.is_director:
        data["secret"] = secret
    if keys.update_key:  # the one key `appliance update` takes bundles signed by
        data["update_key"] = keys.update_key
    if cluster.access.ssh:
        if not host_keys or node.name not in host_keys:
            raise ValueError(f"{node.name}: the profile gives SSH keys, so its seed needs its host key")
        private, public = host_keys[node.name]
        data["ssh_host_key"] = {"private": private, "public": public}
    if cluster.serves_tls:  # real servers present it, directors' https checks trust it (no key)
        if not tls:
            raise ValueError(f"{node.name}: the profile serves TLS on {contract.TLS_PORT}, so the "
                             "seed needs the cluster's certificate (builder/tls.py)")
        data["tls"] = {"cert": tls[0]} if node.is_director else {"cert": tls[0], "key": tls[1]}
    return data


def _q(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid YAML scalar


def seed_files(cluster: Cluster, node: Node, keys: Keys) -> dict[str, bytes]:
    """The files on a node's seed ISO. Pure: same inputs, same bytes."""
    body = json.dumps(appliance(cluster, node, keys), indent=2, sort_keys=True) + "\n"
    instance = f"{cluster.name}-{node.name}-{hashlib.sha256(body.encode()).hexdigest()[:12]}"
    fqdn = f"{node.name}.{cluster.domain}"
    net = cluster.network
    match = (f"    match: {{macaddress: {_q(node.mac)}}}\n    set-name: {_q(net.interface)}"
             if node.mac else f"    match: {{name: {_q(net.interface)}}}")
    network = ["version: 2", "ethernets:", f"  {net.interface}:", match,
               f"    addresses: [{_q(f'{node.address}/{net.prefixlen}')}]"]
    if net.gateway:
        network.append(f"    routes: [{{to: default, via: {_q(net.gateway)}}}]")
    if net.dns:
        network.append(f"    nameservers: {{addresses: [{', '.join(_q(a) for a in net.dns)}]}}")
    return {
        "meta-data": f"instance-id: {_q(instance)}\nlocal-hostname: {_q(node.name)}\n".encode(),
        "user-data": (f"#cloud-config\nhostname: {_q(node.name)}\nfqdn: {_q(fqdn)}\n"
                      "preserve_hostname: false\n").encode(),
        "network-config": ("\n".join(network) + "\n").encode(),
        APPLIANCE: body.encode(),
    }


def instance_of(files: dict[str, bytes]) -> str:
    """The instance-id in a seed's meta-data (what first boot compares)."""
    for line in files["meta-data"].decode().splitlines():
        if line.startswith("instance-id:"):
            return str(json.loads(line.partition(":")[2].strip()))
    raise ValueError("meta-data without instance-id")


@contextlib.contextmanager
def _frozen_clock(epoch: int):
    with mock.patch("time.time", return_value=float(epoch)), \
            mock.patch("time.localtime", time.gmtime):
        yield


def build_iso(files: dict[str, bytes]) -> bytes:
    """An ISO9660 image with Rock Ridge and Joliet names, as genisoimage -J -r makes."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", EPOCH))
    iso = pycdlib.PyCdlib()
    out = io.BytesIO()
    with _frozen_clock(epoch):
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
        for name, data in sorted(files.items()):
            iso.add_fp(io.BytesIO(data), len(data), f"/{ISO_NAMES[name]}", rr_name=name,
                       joliet_path=f"/{name}")
        iso.write_fp(out)
        iso.close()
    return out.getvalue()


def read_iso(path: Path) -> tuple[str, dict[str, bytes]]:
    """The volume label and the files (by Rock Ridge name) of a seed ISO."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_file():
                name = child.rock_ridge.name().decode()
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
                files[name] = buf.getvalue()
        return label, files
    finally:
        iso.close()


def write_seeds(cluster: Cluster, keys: Keys, out: Path, names: list[str] | None = None) -> list[Path]:
    """One ``<node>.iso`` per node (or per name given) under out."""
    paths = []
    for node in cluster.nodes:
        if names and node.name not in names:
            continue
        path = out / f"{node.name}.iso"
        # 0600: directors' seeds hold the heartbeat secret, every seed its node's host key, real
        # servers' the TLS key
        render.write_atomic(path, build_iso(seed_files(cluster, node, keys)), 0o600)
        paths.append(path)
    return paths
