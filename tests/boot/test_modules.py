"""The built images keep the drivers appliances need, so a later trim cannot silently drop one:
the initrd finds the root disk on virtio, SATA, NVMe, USB, SAS/RAID HBAs, VMware, Hyper-V,
Xen and SD/MMC; the root file system keeps the common server and hypervisor NICs. Read from
the build's own outputs (no VM)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from builder.image import IMAGE_NICS, INITRD_STORAGE, ROLES
from lab.paths import ROOT


def module_name(path: str) -> str:
    """usr/lib/modules/6.12.x/kernel/drivers/usb/storage/usb-storage.ko.xz -> usb_storage"""
    return re.sub(r"\.ko(\.\w+)?$", "", Path(path).name).replace("-", "_")


def cpio_names(data: bytes) -> list[str]:
    """Member names of concatenated newc cpio archives (the kernel's initramfs format)."""
    names, pos = [], 0
    while (pos := data.find(b"070701", pos)) != -1:
        size, namesize = int(data[pos + 54:pos + 62], 16), int(data[pos + 94:pos + 102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode(errors="replace")
        pos += 110 + namesize
        pos += -pos % 4 + size
        pos += -pos % 4
        if name != "TRAILER!!!":
            names.append(name)
    return names


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def initrd_modules(initrd: Path) -> set[str]:
    """mkosi's initrd is zstd-compressed cpio archives one after another, zero-padded between:
    each is decompressed on its own (zstd stops at the padding, having written its frame)."""
    raw = initrd.read_bytes()
    starts = [m.start() for m in re.finditer(re.escape(ZSTD_MAGIC), raw)] + [len(raw)]
    data = b"".join(subprocess.run(["zstd", "-dc"], input=raw[a:b], capture_output=True).stdout
                    for a, b in zip(starts, starts[1:], strict=False))
    return {module_name(n) for n in cpio_names(data) if re.search(r"\.ko(\.\w+)?$", n)}


def output(role: str, name: str) -> Path:
    path = ROOT / "build" / role / "output" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build the image with `make {role}.img`")
    return path


@pytest.mark.parametrize("role", ROLES)
def test_the_initrd_finds_the_root_disk_on_every_common_controller(role):
    found = initrd_modules(output(role, f"{role}.initrd"))
    assert INITRD_STORAGE <= found, f"missing from the initrd: {sorted(INITRD_STORAGE - found)}"
    print(f"\n{role}: initrd {output(role, f'{role}.initrd').stat().st_size >> 20} MiB, {len(found)} modules")


@pytest.mark.parametrize("role", ROLES)
def test_the_image_keeps_the_common_server_and_hypervisor_nics(role):
    modules = {module_name(line) for line in output(role, "modules.list").read_text().split()}
    assert IMAGE_NICS <= modules, f"missing from the image: {sorted(IMAGE_NICS - modules)}"
    assert INITRD_STORAGE <= modules  # udev loads them again after the switch to the root
    print(f"\n{role}: {len(modules)} kernel modules in the image")


def test_the_cpio_reader_lists_what_cpio_wrote(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "usb-storage.ko.xz").write_bytes(b"x" * 5)
    (tmp_path / "b.txt").write_bytes(b"hello")
    listing = subprocess.run(["cpio", "-o", "-H", "newc"], input=b"a\na/usb-storage.ko.xz\nb.txt\n",
                             cwd=tmp_path, check=True, capture_output=True).stdout
    assert cpio_names(listing + listing) == ["a", "a/usb-storage.ko.xz", "b.txt"] * 2
    assert module_name("a/usb-storage.ko.xz") == "usb_storage"
