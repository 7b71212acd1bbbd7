"""The heartbeat secret: never in the profile or the repo, generated once and reused.

It lives in a file the profile names (``heartbeat.secret_file``, relative to the profile)
or, by default, in ``.secrets/<cluster>.authkey`` (git-ignored, 0600), created the first
time seeds are made.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from builder.errors import ApplianceError
from builder.profile import Cluster

MIN_LENGTH = 16
WEAK = {"password", "passw0rd", "secret", "changeme", "heartbeat", "linux-ha", "ultramonkey",
        "admin", "root", "test", "1234567890123456", "0123456789abcdef"}


class SecretError(ApplianceError, ValueError):
    """The secret file is missing, unsafe or weak; the message says what to do."""


def problems(secret: str) -> list[str]:
    """Why a secret is not good enough for heartbeat's authkeys (empty list: it is)."""
    found = []
    if secret.lower() in WEAK or len(set(secret)) < 6:
        found.append("it is a well-known or trivially guessable secret")
    if len(secret) < MIN_LENGTH:
        found.append(f"it is {len(secret)} characters long; use at least {MIN_LENGTH}")
    if any(c.isspace() for c in secret) or not secret.isprintable():
        found.append("it contains spaces or control characters, which authkeys cannot hold")
    return found


def path_for(cluster: Cluster, profile_path: Path, secrets_dir: Path) -> Path:
    if cluster.heartbeat.secret_file:
        return (profile_path.parent / cluster.heartbeat.secret_file).resolve()
    return secrets_dir / f"{cluster.name}.authkey"


def read(path: Path) -> str:
    """Read and check an existing secret file."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretError(f"{path}: readable by others (mode {mode:o}); run: chmod 600 {path}")
    secret = path.read_text().strip()
    found = problems(secret)
    if found:
        raise SecretError(f"{path}: refusing this heartbeat secret: {'; '.join(found)}. "
                          f"Delete the file to have a strong one generated, or write one "
                          f"(e.g. `openssl rand -hex 32 > {path}`).")
    return secret


def load_or_create(cluster: Cluster, profile_path: Path, secrets_dir: Path = Path(".secrets"),
                   create: bool = True) -> str | None:
    """The cluster's secret; generated on first use unless the profile names a file."""
    path = path_for(cluster, profile_path, secrets_dir)
    if path.exists():
        return read(path)
    if cluster.heartbeat.secret_file:
        raise SecretError(f"{path}: secret_file named by the profile does not exist; create it "
                          f"(e.g. `openssl rand -hex 32 > {path}; chmod 600 {path}`) "
                          "or remove secret_file to have one generated")
    if not create:
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # fails if a concurrent run created it first: then use that one
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return read(path)
