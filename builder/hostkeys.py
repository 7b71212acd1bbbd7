"""Each node's SSH host key, made by the builder, so that the first `ssh` is already verified.

No host key is baked into an image (two nodes from one image would share it) and none is made
at first boot (the operator could only trust it on first use). The builder makes one ed25519
key per node, once, keeps it next to the cluster's secret (``.secrets/<cluster>.hostkeys/``,
0700/0600), puts it on that node's seed, and writes ``.secrets/<cluster>.known_hosts`` naming
every node by name and address: ``ssh -o UserKnownHostsFile=.secrets/NAME.known_hosts``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from builder import render
from builder.profile import Cluster, Node


@dataclass(frozen=True)
class HostKey:
    private: str   # OpenSSH PEM, for /etc/ssh/ssh_host_ed25519_key (0600)
    public: str    # "ssh-ed25519 AAAA... root@NODE"


def generate(comment: str) -> HostKey:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return HostKey(private, f"{public} {comment}")


def directory(cluster: Cluster, secrets_dir: Path) -> Path:
    return secrets_dir / f"{cluster.name}.hostkeys"


def load_or_create(cluster: Cluster, secrets_dir: Path) -> dict[str, HostKey]:
    """Every node's host key, made the first time and kept: re-seeding never changes them."""
    where = directory(cluster, secrets_dir)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = {}
    for node in cluster.nodes:
        private, public = where / node.name, where / f"{node.name}.pub"
        if not (private.exists() and public.exists()):
            made = generate(f"root@{node.name}")
            render.write_atomic(public, made.public + "\n", 0o644)
            render.write_atomic(private, made.private, 0o600)  # last: both exist or neither counts
        mode = private.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(private, 0o600)
        keys[node.name] = HostKey(private.read_text(), public.read_text().strip())
    return keys


def known_hosts(cluster: Cluster, keys: dict[str, HostKey]) -> str:
    """known_hosts lines: each node by name, FQDN and address, with its own key."""
    def names(node: Node) -> str:
        return ",".join([node.name, f"{node.name}.{cluster.domain}", str(node.address)])
    return "".join(f"{names(n)} {' '.join(keys[n.name].public.split()[:2])}\n" for n in cluster.nodes)


def write_known_hosts(cluster: Cluster, keys: dict[str, HostKey], secrets_dir: Path) -> Path:
    path = secrets_dir / f"{cluster.name}.known_hosts"
    render.write_atomic(path, known_hosts(cluster, keys), 0o644)
    return path
