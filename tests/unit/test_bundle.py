"""Update bundles (builder/bundle.py): signed by the builder's update key, refused by `verify`
when the signature, a checksum or the list of files is not as signed."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder import bundle
from builder.files import sha256
from builder.image import partitions


@pytest.fixture
def key(tmp_path) -> Path:
    return bundle.signing_key(tmp_path / "secrets")


@pytest.fixture
def signed(tmp_path, key) -> Path:
    b = tmp_path / "director-v2"
    b.mkdir()
    for name in bundle.PAYLOAD:
        (b / name).write_bytes(b"v2\n" if name == bundle.VERSION else name.encode() * 1000)
    bundle.sign(b, key)
    return b


def public(key: Path) -> str:
    return key.with_suffix(".pub").read_text()


def test_the_update_key_is_made_once_and_kept_private(tmp_path, key):
    assert key.stat().st_mode & 0o777 == 0o600 and (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    before = key.read_bytes()
    assert bundle.signing_key(tmp_path / "secrets") == key and key.read_bytes() == before
    assert public(key).startswith("ssh-ed25519 ")


def test_a_signed_bundle_verifies_and_says_its_version(signed, key):
    assert bundle.verify(signed, public(key)) == "v2"


def test_a_changed_file_is_named(signed, key):
    (signed / "vmlinuz").write_bytes(b"not the kernel that was signed")
    with pytest.raises(bundle.BundleError, match="vmlinuz: missing or not the file SHA256SUMS names"):
        bundle.verify(signed, public(key))


def test_rewritten_sums_fail_the_signature(signed, key):
    (signed / "initrd").write_bytes(b"evil")
    sums = (signed / bundle.SUMS).read_text().splitlines()
    sums = [f"{sha256(signed / 'initrd')}  initrd" if line.endswith("  initrd") else line for line in sums]
    (signed / bundle.SUMS).write_text("\n".join(sums) + "\n")
    with pytest.raises(bundle.BundleError, match="not a signature of SHA256SUMS by the update key"):
        bundle.verify(signed, public(key))


def test_another_key_is_not_trusted(signed, tmp_path):
    other = bundle.signing_key(tmp_path / "elsewhere")
    with pytest.raises(bundle.BundleError, match="by the update key"):
        bundle.verify(signed, public(other))


def test_an_unsigned_or_padded_bundle_is_refused(signed, key):
    (signed / "extra.sh").write_text("#!/bin/sh\n")
    with pytest.raises(bundle.BundleError, match="extra.sh not in SHA256SUMS"):
        bundle.verify(signed, public(key))
    (signed / "extra.sh").unlink()
    (signed / "lost+found").mkdir()  # a bundle on an ext4 stick: the file system's own directory
    assert bundle.verify(signed, public(key))
    (signed / "lost+found").rmdir()
    (signed / "lost+found").write_text("a file, not the file system's directory")
    with pytest.raises(bundle.BundleError, match="lost\\+found not in SHA256SUMS"):
        bundle.verify(signed, public(key))
    (signed / "lost+found").unlink()
    (signed / bundle.SIGNATURE).unlink()
    with pytest.raises(bundle.BundleError, match="no SHA256SUMS.sig: not a signed bundle"):
        bundle.verify(signed, public(key))


def test_write_takes_the_root_partition_and_leaves_nothing_half_written(tmp_path, key):
    image = tmp_path / "director.img"
    mib = 1 << 20
    image.write_bytes(b"\0" * 4 * mib)
    # a GPT with one root partition (x86-64 root type) at 1 MiB, 2 MiB long, filled with a pattern
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(image)], check=True, text=True,
                   input="label: gpt\nstart=2048, size=4096, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n")
    pattern = bytes(range(256)) * (2 * mib // 256)
    with open(image, "r+b") as f:
        f.seek(mib)
        f.write(pattern)
    boot = tmp_path / "output"
    boot.mkdir()
    with pytest.raises(bundle.BundleError, match="director.version is missing: build the image first"):
        bundle.write("director", image, partitions(image)["root"], boot, tmp_path / "bundles", key)
    (tmp_path / "director.version").write_text("v3\n")
    with pytest.raises(bundle.BundleError, match="director.vmlinuz is missing: build the image first"):
        bundle.write("director", image, partitions(image)["root"], boot, tmp_path / "bundles", key)
    assert not (tmp_path / "bundles").exists()
    (boot / "director.vmlinuz").write_bytes(b"kernel")
    (boot / "director.initrd").write_bytes(b"initrd")
    made = bundle.write("director", image, partitions(image)["root"], boot, tmp_path / "bundles", key, level=1)
    assert made.name == "director-v3" and [p.name for p in made.parent.iterdir()] == ["director-v3"]
    assert bundle.verify(made, public(key)) == "v3"
    root = subprocess.run(["zstd", "-dc", str(made / "root.ext4.zst")], capture_output=True, check=True).stdout
    assert root == pattern
    # the frame names the root's size: the node compares it with its slot before writing a byte
    listed = subprocess.run(["zstd", "-lv", str(made / "root.ext4.zst")], capture_output=True, text=True).stdout
    assert f"Decompressed Size: 2.00 MiB ({len(pattern)} B)" in listed


def test_the_labs_variants_are_the_same_root_as_another_version_signed_again(tmp_path, key):
    """lab/bundles.py: what the update boot test installs. The variant's root says its version
    (and, broken, carries the drop-in that fails the health gate); the bundle verifies."""
    from lab import bundles
    tree = tmp_path / "tree"
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/os-release").write_text('ID=debian\nIMAGE_VERSION="v1"\n')
    root = tmp_path / "root.ext4"
    subprocess.run(["truncate", "-s", "8M", root], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", tree, root], check=True)
    src = tmp_path / "director-v1-dirty"  # a version with a dash (git describe --dirty)
    src.mkdir()
    subprocess.run(["zstd", "-q", root, "-o", src / "root.ext4.zst"], check=True)
    for name in ("vmlinuz", "initrd"):
        (src / name).write_bytes(name.encode() * 100)
    (src / bundle.VERSION).write_text("v1-dirty\n")
    for broken in (False, True):
        made = bundles.variant(src, tmp_path / "out", f"v2-{broken}", key, broken=broken)
        assert made.name == f"director-v2-{broken}"
        assert bundle.verify(made, public(key)) == f"v2-{broken}"
        out = tmp_path / f"check-{broken}.ext4"
        subprocess.run(["zstd", "-q", "-d", made / "root.ext4.zst", "-o", out], check=True)
        assert bundles.cat(out, bundles.OS_RELEASE) == f'ID=debian\nIMAGE_VERSION="v2-{broken}"\n'
        assert ("ExecStartPre=/bin/false" in bundles.cat(out, f"{bundles.BROKEN_DROPIN_DIR}/broken.conf")) is broken
        assert out.stat().st_size == root.stat().st_size  # the frame says the size a slot must have
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith("tmp")]  # nothing half-made
