"""Files as first boot and `appliance apply` write them: whole, with their mode, or not at all.

Apart from render.py so that the image's quick commands (`appliance apply`) write files without
importing Jinja2 and the profile code: under TCG those imports alone take seconds.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class File:
    content: str
    mode: int = 0o644


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write to a temp file with its mode, sync it, rename, sync the directory: never a
    half-written file, not even after a power loss. (Without the syncs a director that lost
    power a minute after first boot came back with its first boot's files gone: ext4 had
    journalled the renames but not yet written the data.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_tree(files: dict[str, File], root: Path) -> None:
    """Write files under root, each atomically, with its mode."""
    for path, f in files.items():
        write_atomic(root / path.lstrip("/"), f.content, f.mode)


def sha256(path: Path) -> str:
    """The file's sha256, hex, read a MiB at a time (images and bundles are hundreds of MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
