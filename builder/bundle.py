"""Update bundles: the builder's half of in-place updates (issue 25). The node's half, A/B root
slots and boot counting, is firstboot/update.py (`appliance update`); docs/day2-design.md.

A bundle is a directory a node can check before it writes anything:

    VERSION          the version it brings (the image's IMAGE_VERSION: builder/image.py)
    root.ext4.zst    the role's root file system (the image's root partition), zstd
    vmlinuz, initrd  what the role's ESP boots
    SHA256SUMS       `sha256sum` lines for exactly the files above
    SHA256SUMS.sig   an SSH signature of SHA256SUMS (`ssh-keygen -Y sign`, namespace
                     UPDATE_NAMESPACE) by the operator's update key

The update key (.secrets/update-key, ed25519, 0600) never leaves the builder; a node is to trust
its public half only. `verify` is what a node runs: the signature first (nothing else is read
from a bundle whose SHA256SUMS is not signed by that key), then every file against its sum, and
no file the sums do not name.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder.errors import ApplianceError
from builder.files import sha256, write_atomic
from builder.run import run

UPDATE_NAMESPACE = "appliance-update@lvs"   # ssh-keygen -Y: a signature for nothing else
SUMS, SIGNATURE, VERSION = "SHA256SUMS", "SHA256SUMS.sig", "VERSION"
PAYLOAD = ("root.ext4.zst", "vmlinuz", "initrd", VERSION)
KEY_NAME = "update-key"
SIGNER = "appliance-update"  # the one principal in the node's allowed_signers


class BundleError(ApplianceError):
    """A bundle that must not be installed: the message names the file and what is wrong."""


def signing_key(secrets_dir: Path) -> Path:
    """The update key, made on first use (0600 in a 0700 directory) and kept: every bundle of
    this builder is signed by it."""
    key = secrets_dir / KEY_NAME
    if not key.exists():
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=secrets_dir) as tmp:
            made = Path(tmp) / KEY_NAME
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", SIGNER, "-f", made])
            os.replace(made.with_suffix(".pub"), key.with_suffix(".pub"))
            os.replace(made, key)  # last: a key without its public half never counts as made
    os.chmod(key, 0o600)
    return key


def sign(bundle: Path, key: Path) -> None:
    """SHA256SUMS of the payload and its signature."""
    write_atomic(bundle / SUMS, "".join(f"{sha256(bundle / n)}  {n}\n" for n in PAYLOAD))
    (bundle / SIGNATURE).unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", UPDATE_NAMESPACE, bundle / SUMS])


def signed_sums(bundle: Path, public_key: str) -> dict[str, str]:
    """SHA256SUMS's digests (file name -> sha256) once `public_key`'s signature of it holds and it
    names exactly the payload; no other file is read."""
    for name in (SUMS, SIGNATURE):
        if not (bundle / name).is_file():
            raise BundleError(f"{bundle}: no {name}: not a signed bundle")
    with tempfile.NamedTemporaryFile("w", suffix=".signers") as signers, open(bundle / SUMS, "rb") as sums:
        signers.write(f"{SIGNER} {' '.join(public_key.split()[:2])}\n")
        signers.flush()
        checked = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", signers.name, "-I", SIGNER,
                                  "-n", UPDATE_NAMESPACE, "-s", str(bundle / SIGNATURE)],
                                 stdin=sums, capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        raise BundleError(f"{bundle / SIGNATURE}: not a signature of {SUMS} by the update key "
                          f"({(checked.stderr or checked.stdout).strip()})")
    listed = {}
    for line in (bundle / SUMS).read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    if sorted(listed) != sorted(PAYLOAD):
        raise BundleError(f"{bundle / SUMS} names {', '.join(sorted(listed))}; a bundle holds "
                          f"{', '.join(PAYLOAD)}")
    return listed


def verify(bundle: Path, public_key: str) -> str:
    """The bundle's version if `public_key` signed it and every file is as signed."""
    listed = signed_sums(bundle, public_key)
    # an ext4 medium's own lost+found is the file system's, not the bundle's
    extra = sorted(p.name for p in bundle.iterdir() if p.name not in (*PAYLOAD, SUMS, SIGNATURE)
                   and not (p.name == "lost+found" and p.is_dir()))
    if extra:
        raise BundleError(f"{bundle}: {', '.join(extra)} not in {SUMS}")
    for name, digest in listed.items():
        if not (bundle / name).is_file() or sha256(bundle / name) != digest:
            raise BundleError(f"{bundle / name}: missing or not the file {SUMS} names (checksum)")
    return (bundle / VERSION).read_text().strip()


def write(role: str, image: Path, root, boot: Path, out: Path, key: Path, level: int = 12) -> Path:
    """out/ROLE-VERSION from the built image (its root partition `root`: builder.image.partitions,
    which the node never imports; the version the builder recorded beside it) and the kernel and
    initrd mkosi wrote (`boot`: image.output_dir); nothing is left half-written."""
    kernel, initrd, recorded = boot / f"{role}.vmlinuz", boot / f"{role}.initrd", image.with_suffix(".version")
    for path in (image, recorded, kernel, initrd):
        if not path.is_file():
            raise BundleError(f"{path} is missing: build the image first (make {role}.img)")
    version_ = recorded.read_text().strip()
    target = out / f"{role}-{version_}"
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{target.name}."))
    try:
        with open(image, "rb") as src, open(tmp / "root.ext4.zst", "wb") as dst:
            src.seek(root.start)
            # --stream-size: the frame header says the root's size, which the node checks against
            # its slot before it writes anything (`zstd -lv`: "Decompressed Size")
            zstd = subprocess.Popen(["zstd", "-q", f"-{level}", "-T0", f"--stream-size={root.size}", "-c"],
                                    stdin=subprocess.PIPE, stdout=dst)
            assert zstd.stdin
            left = root.size
            while left:
                block = src.read(min(left, 1 << 20))
                if not block:
                    raise BundleError(f"{image} ends inside its root partition")
                zstd.stdin.write(block)
                left -= len(block)
            zstd.stdin.close()
            if zstd.wait() != 0:
                raise BundleError(f"zstd failed compressing {image}'s root partition")
        seal(tmp, target, version_, kernel, initrd, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def seal(tmp: Path, target: Path, version: str, kernel: Path, initrd: Path, key: Path) -> None:
    """Finish a bundle being written in `tmp` (its root.ext4.zst in place): the kernel and
    initrd, VERSION, the signed sums; then it replaces `target` whole."""
    shutil.copyfile(kernel, tmp / "vmlinuz")
    shutil.copyfile(initrd, tmp / "initrd")
    (tmp / VERSION).write_text(version + "\n")
    sign(tmp, key)
    tmp.chmod(0o755)  # mkdtemp's 0700 is for while it is being written
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
