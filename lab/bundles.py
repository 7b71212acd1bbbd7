"""Update bundles the boot tests install: another version of a built bundle, good or broken,
signed by the same key, and a medium (a disk image) that carries one to a VM.

A variant is the same root with another IMAGE_VERSION in its os-release (debugfs edits the ext4
image in place; nothing is mounted), and, broken, a drop-in that makes the node's health gate
(appliance-ready.service) fail: what a bad release looks like to boot assessment.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from builder import bundle, contract
from builder.run import run

OS_RELEASE = "/usr/lib/os-release"
BROKEN_DROPIN_DIR = f"/usr/lib/systemd/system/{contract.READY_UNIT}.d"
BROKEN_DROPIN = "[Service]\n# a test-only variant (lab/bundles.py): the health gate fails\nExecStartPre=/bin/false\n"


def with_version(os_release: str, version: str) -> str:
    """os-release text with IMAGE_VERSION set to `version` (added when missing)."""
    lines = [line for line in os_release.splitlines() if not line.startswith("IMAGE_VERSION=")]
    return "\n".join(lines + [f'IMAGE_VERSION="{version}"']) + "\n"


def cat(image: Path, path: str) -> str:
    """A file in an ext4 image, read with debugfs (empty when there is none)."""
    return run(["debugfs", "-R", f"cat {path}", image]).stdout


def debugfs(image: Path, *requests: str) -> str:
    """debugfs -w on an ext4 image; its requests go in on stdin, one a line."""
    return run(["debugfs", "-w", "-f", "-", image], input="\n".join(requests) + "\n").stdout


def variant(src: Path, out: Path, version: str, key: Path, broken: bool = False, level: int = 3) -> Path:
    """out/director-VERSION (or the source's role): `src` as `version`, signed by `key`."""
    was = (src / bundle.VERSION).read_text().strip()  # a version may hold dashes: 8de3242-dirty
    role = src.name.removesuffix(f"-{was}")
    target = out / f"{role}-{version}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "root.ext4"
        run(["zstd", "-q", "-d", src / "root.ext4.zst", "-o", root])
        release = tmp / "os-release"
        release.write_text(with_version(cat(root, OS_RELEASE), version))
        requests = [f"rm {OS_RELEASE}", f"write {release} {OS_RELEASE}"]
        if broken:
            dropin = tmp / "broken.conf"
            dropin.write_text(BROKEN_DROPIN)
            parts = BROKEN_DROPIN_DIR.strip("/").split("/")  # mkdir -p: an existing one is only a message
            requests += [f"mkdir /{'/'.join(parts[:i])}" for i in range(1, len(parts) + 1)]
            requests += [f"write {dropin} {BROKEN_DROPIN_DIR}/broken.conf"]
        debugfs(root, *requests)  # debugfs exits 0 whatever a request did: read it back
        wanted = {OS_RELEASE: f'IMAGE_VERSION="{version}"\n'}
        if broken:
            wanted[f"{BROKEN_DROPIN_DIR}/broken.conf"] = BROKEN_DROPIN
        for path, text in wanted.items():
            if text not in cat(root, path):
                raise RuntimeError(f"debugfs did not write {path} into {src}'s root")
        made = tmp / target.name
        made.mkdir()
        run(["zstd", "-q", f"-{level}", "-T0", f"--stream-size={root.stat().st_size}", root,
             "-o", made / "root.ext4.zst"])
        bundle.seal(made, target, version, src / "vmlinuz", src / "initrd", key)
    return target


def medium(tree: Path, path: Path, label: str = "update") -> Path:
    """An ext4 disk image holding what `tree` holds (bundle directories), as on a stick."""
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    path.unlink(missing_ok=True)
    run(["truncate", "-s", str(size + size // 10 + (64 << 20)), path])
    run(["mkfs.ext4", "-q", "-L", label, "-d", tree, path])
    return path
