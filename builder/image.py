"""Build an appliance image with mkosi.

The builder stages what first boot needs (the profile and rendering code, firstboot/, the
units), gives mkosi the package sources explicitly (mkosi 24.3 would add debian-debug, which
mirrors may reject), and moves the finished image into place only when mkosi succeeded.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from builder import contract, host
from builder.render import write_atomic
from builder.run import run

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("director", "webserver")
# What the images must keep however far a later trim goes (tests/boot/test_modules.py checks the
# built initrd and root against these). The initrd: the root disk on the machines appliances
# boot on. The root file system: the NICs of common servers and hypervisors.
INITRD_STORAGE = {
    "virtio_blk", "virtio_scsi", "ahci", "nvme", "sd_mod",                 # VMs, SATA, NVMe
    "xhci_pci", "ehci_pci", "usb_storage", "uas",                          # USB sticks
    "megaraid_sas", "mpt3sas", "hpsa", "smartpqi", "aacraid",              # SAS/RAID HBAs
    "vmw_pvscsi", "mptsas", "mptspi", "hv_storvsc", "xen_blkfront",        # VMware, Hyper-V, Xen
    "ata_piix",                                                            # legacy IDE
    "mmc_block", "sdhci_pci",                                              # SD/MMC
    "ext4",
}
IMAGE_NICS = {
    "e1000e", "igb", "ixgbe", "i40e", "ice", "bnxt_en", "tg3", "mlx5_core", "r8169",
    "vmxnet3", "hv_netvsc", "virtio_net", "xen_netfront",
}
# what goes into the image: code that runs at first boot, and nothing host-only
STAGED = ["builder/__init__.py", "builder/profile.py", "builder/render.py", "builder/secret.py",
          "builder/run.py", "builder/contract.py", "builder/errors.py", "builder/sshkeys.py",
          "builder/templates", "firstboot/__init__.py",
          "firstboot/configure.py", "firstboot/ready.py", "firstboot/hawatch.py", "firstboot/arp.py",
          "builder/files.py", "firstboot/state.py", "firstboot/status.py", "firstboot/appliance.py",
          "firstboot/metrics.py", "firstboot/update.py", "builder/bundle.py"]
UNITS = ["firstboot/appliance-firstboot.service", f"firstboot/{contract.READY_UNIT}"]


# GPT partition types of the image's partitions (mkosi.repart/), by the names used here
PARTITION_TYPES = {contract.GPT_ESP.upper(): "esp", contract.GPT_BIOS.upper(): "bios",
                   contract.GPT_ROOT.upper(): "root"}
# free space left in the root file system of the image: room for first boot where the disk is
# no larger than the image (elsewhere first boot grows the file system to the disk)
ROOT_MARGIN = 32 * 2**20


def sources(mirror: str, release: str) -> str:
    """deb822 sources for the image: the release, its updates and its security suite."""
    security = mirror.rsplit("/", 1)[0] + "/debian-security"
    key = "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    return (f"Types: deb\nURIs: {mirror}\nSuites: {release} {release}-updates\nComponents: main\n{key}\n"
            f"Types: deb\nURIs: {security}\nSuites: {release}-security\nComponents: main\n{key}")


def source_date_epoch() -> str:
    """SOURCE_DATE_EPOCH, else the last commit's time: same commit, same timestamps."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return os.environ["SOURCE_DATE_EPOCH"]
    try:
        out = run(["git", "-C", ROOT, "log", "-1", "--format=%ct"], check=False).stdout.strip()
    except OSError:
        out = ""
    return out or str(contract.FALLBACK_EPOCH)


def stage(dest: Path) -> None:
    """The first-boot tree, copied fresh (no __pycache__, no host timestamps kept)."""
    if dest.exists():
        shutil.rmtree(dest)
    lib = dest / "usr/lib/appliance"
    for rel in STAGED:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, lib / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (lib / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, lib / rel)
    units = dest / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    for rel in UNITS:
        shutil.copy(ROOT / rel, units)
    shutil.copy(ROOT / "firstboot/README.md", lib / "README")


def package_list(manifest: Path) -> str:
    """`name version` per installed package, from mkosi's JSON manifest."""
    data = json.loads(manifest.read_text())
    pkgs = sorted((p["name"], p["version"]) for p in data.get("packages", []))
    return "".join(f"{n} {v}\n" for n, v in pkgs)


def version(tree: Path = ROOT) -> str:
    """The version an image built from `tree` reports (IMAGE_VERSION in its os-release, ROLE.version
    beside it, update bundles' names): `git describe`, `-dirty` with uncommitted changes."""
    described = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty", "--tags"],
                               capture_output=True, text=True, check=False)
    return described.stdout.strip() or "unknown"


def output_dir(role: str, work: Path = ROOT / "build") -> Path:
    """Where mkosi leaves a role's build: ROLE.raw (moved to ROLE.img), ROLE.vmlinuz, ROLE.initrd,
    its manifest."""
    return work / role / "output"


def build(role: str, release: str = contract.RELEASE, out: Path = ROOT, work: Path = ROOT / "build",
          cache: Path | None = None) -> Path:
    """Build <out>/<role>.img (raw GPT disk) and <role>.packages next to it. mkosi's caches
    (default: work/cache) hold one base image per role and release."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    host.ensure()
    w = work / role
    pmt = w / "package-manager-tree"
    (pmt / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (pmt / "etc/apt/sources.list.d/mkosi.sources").write_text(sources(host.debian_mirror(), release))
    stage(w / "stage")
    output = output_dir(role, work)
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    cache = cache or work / "cache"
    (cache / role).mkdir(parents=True, exist_ok=True)
    (cache / "packages").mkdir(parents=True, exist_ok=True)
    epoch = source_date_epoch()
    built_version = version()
    incremental = any((cache / role).iterdir())  # mkosi's cached base image from an earlier build
    started = time.monotonic()
    run(["mkosi", "--directory", ROOT / "images", "--include", ROOT / "images" / role,
         "--release", release, "--package-manager-tree", pmt, "--extra-tree", f"{w / 'stage'}:/",
         "--output-dir", output, "--cache-dir", cache / role, "--package-cache-dir", cache / "packages",
         "--output", role, "--source-date-epoch", epoch, "--image-version", built_version, "--incremental",
         # for systemd-repart's mkfs.ext4 (>= 1.47.1 clamps every inode time to it) and mcopy
         "--environment", f"SOURCE_DATE_EPOCH={epoch}",
         "--force", "build"], capture=False)
    shrink_root(output / f"{role}.raw", epoch)
    image = out / f"{role}.img"
    os.replace(output / f"{role}.raw", image)
    write_atomic(out / f"{role}.packages", package_list(output / f"{role}.manifest"))
    write_atomic(out / f"{role}.version", built_version + "\n")
    # what `make bench` prints as this image's build figures
    st = image.stat()
    write_atomic(w / "build.json", json.dumps({
        "role": role, "release": release, "seconds": round(time.monotonic() - started, 1),
        "incremental": incremental, "raw": st.st_size, "allocated": st.st_blocks * 512}))
    return image


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int


def number(pattern: str, text: str) -> int:
    """The number a tool printed where `pattern` (one group, multi-line) says; a ValueError
    naming the pattern when the tool printed something else."""
    found = re.search(pattern, text, re.M)
    if not found:
        raise ValueError(f"no {pattern!r} in: {text[:200]!r}")
    return int(found.group(1))


def partitions(image: Path) -> dict[str, Partition]:
    """The image's partitions by name (esp, bios, root), from its GPT."""
    table = json.loads(run(["sfdisk", "--json", image]).stdout)["partitiontable"]
    return {PARTITION_TYPES.get(p["type"].upper(), p["type"]):
            Partition(number(r"(\d+)$", p["node"]), p["start"] * 512, p["size"] * 512)
            for p in table["partitions"]}


def shrink_root(image: Path, epoch: str, margin: int = ROOT_MARGIN) -> None:
    """Drop the root's copy of the kernel, cut the root file system to its contents plus
    `margin`, its partition to the file system and the image to the partition.

    systemd-repart's Minimize=guess leaves ~50 % of ext4 free, ~180 MiB of every image.
    resize2fs -f skips e2fsck, whose check time would make two builds differ;
    E2FSPROGS_FAKE_TIME does the same for the superblock's write time."""
    root = partitions(image)["root"]
    loop = run(["losetup", "--find", "--show", "--offset", root.start, "--sizelimit", root.size,
                image]).stdout.strip()
    fake_time = {**os.environ, "E2FSPROGS_FAKE_TIME": epoch}
    try:
        # The kernel boots from the ESP. Its copy in the root (12 MiB) is where mkosi took it
        # from; no appliance installs kernels in place.
        listing = run(["debugfs", "-R", "ls -p /usr/lib/modules", loop]).stdout
        for version in re.findall(r"^/\d+/04\d+/\d+/\d+/([^/]+)/", listing, re.M):
            if version not in (".", ".."):
                run(["debugfs", "-w", "-R", f"rm /usr/lib/modules/{version}/vmlinuz", loop], env=fake_time)
        header = run(["dumpe2fs", "-h", loop]).stdout
        block = number(r"^Block size:\s+(\d+)", header)
        minimum = int(run(["resize2fs", "-P", loop]).stdout.rsplit(":", 1)[1])
        blocks = minimum + margin // block
        run(["resize2fs", "-f", loop, blocks], env=fake_time)
    finally:
        run(["losetup", "--detach", loop])
    mib = 2**20
    size = -(-blocks * block // mib) * mib  # whole MiB, as systemd-repart aligns partitions
    quiet = ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel"]
    run(quiet + ["-N", root.number, image], input=f", {size // 512}\n")
    # The image ends a MiB after the root partition: room for the backup GPT, and whole MiB (some
    # clouds refuse other sizes). The table is written anew for the new end (sfdisk reads a GPT
    # whose backup lies past the end as no table at all); the boot code in the MBR stays.
    table = "".join(line for line in run(["sfdisk", "--dump", image]).stdout.splitlines(True)
                    if not line.startswith(("last-lba:", "device:")))
    os.truncate(image, root.start + size + mib)
    run(quiet + [image], input=table)


def to_qcow2(image: Path) -> Path:
    target = image.with_suffix(".qcow2")
    tmp = target.with_suffix(".qcow2.tmp")
    run(["qemu-img", "convert", "-O", "qcow2", "-c", image, tmp])
    os.replace(tmp, target)
    return target
