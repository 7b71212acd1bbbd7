"""`appliance update BUNDLE_DIR`: install a signed update bundle (builder/bundle.py) into the
root slot this node does not run, and boot it next, on trial (issue 25; docs/day2-design.md).

The disk (images/base/mkosi.extra/usr/lib/repart.d): the ESP with the image's own kernel and
entry, root slots A and B, an XBOOTLDR partition (label appliance-boot) for the kernels updates
bring, and the state partition. Debian trixie has no systemd-sysupdate, so this does its job:

1. check the bundle: the signature by the update key the seed names, then every checksum
   (bundle.verify), and that its root fits the slot; nothing is written before;
2. forget the other slot: its boot entry goes first, then its label becomes "_empty" (root
   discovery ignores it), so a half-written slot is never booted;
3. write the root into it, label it with the version, copy the kernel and initrd to XBOOTLDR;
4. write the running version's entry there too (blessed: no counter, naming its slot), so that
   every version has one entry naming its root, then the new one as
   `appliance-VERSION+3.conf`: systemd-boot tries it three times; systemd-bless-boot drops the
   counter once boot-complete.target is reached (the node's health gate), and an entry whose
   tries are spent sorts after the others, so the previous version boots again by itself.

`--stage` does 1-3 only (with a note of the signed sums beside the kernel): the slow part, which
`builder upgrade` runs ahead, node by node in the background; the later `appliance update`
finds the slot staged (signature, note, label and kernel checked again) and writes step 4 alone.

Every entry carries the running machine-id (`systemd.machine_id=`): the journal and the
exporters see one machine across versions. The node's files come back from its state
(firstboot/configure.py renders a root that does not hold what the node runs).
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from builder import contract
from builder.errors import ApplianceError
from builder.files import sha256

EMPTY = "_empty"            # systemd's label of an unused slot: root discovery skips it
TRIES = contract.UPDATE_TRIES  # boots a new version gets before the previous one boots again
ENTRY_PREFIX = "appliance-"
STAGED = "staged.json"      # beside a staged version's kernel: the slot and signed sums it came from
DROPPED = ("root=", "initrd=", "BOOT_IMAGE=", "systemd.machine_id=")  # set per entry here


class UpdateError(ApplianceError):
    """An update this node refuses or could not finish; the message says what and what to do."""


@dataclass(frozen=True)
class Part:
    device: str     # /dev/vda3
    partuuid: str
    label: str
    parttype: str
    size: int       # bytes

    @property
    def number(self) -> int:
        return int(re.search(r"(\d+)$", self.device).group(1))  # type: ignore[union-attr]


@dataclass(frozen=True)
class Layout:
    disk: str               # /dev/vda
    running: Part           # the root this boot runs
    other: Part | None      # the slot an update writes; None on a disk too small for two
    boot: Part | None       # XBOOTLDR

    def refusal(self) -> str | None:
        """Why this node cannot be updated in place, or None."""
        if self.other is None or self.boot is None:
            return ("this disk has no second root slot (made at first boot only where the disk has room: "
                    "about 2.5 GiB and more): re-flash it with the new image instead")
        return None


def layout(lsblk: dict, root_device: str) -> Layout:
    """The disk of the running root (`lsblk --json --bytes -o NAME,PATH,PKNAME,PARTUUID,PARTLABEL,
    PARTTYPE,SIZE`) read as slots: the running one, the other root-type partition, XBOOTLDR."""
    parts = [child for disk in lsblk["blockdevices"] for child in disk.get("children") or []]

    def part(d: dict) -> Part:
        return Part(d["path"], (d.get("partuuid") or "").lower(), d.get("partlabel") or "",
                    (d.get("parttype") or "").lower(), int(d.get("size") or 0))
    running = next((d for d in parts if d["path"] == root_device), None)
    if running is None:
        raise UpdateError(f"the running root {root_device} is not a partition lsblk lists")
    disk = [d for d in parts if d.get("pkname") == running.get("pkname")]
    roots = [part(d) for d in disk if (d.get("parttype") or "").lower() == contract.GPT_ROOT
             and d["path"] != root_device]
    boots = [part(d) for d in disk if (d.get("parttype") or "").lower() == contract.GPT_XBOOTLDR]
    return Layout(f"/dev/{running['pkname']}", part(running), roots[0] if roots else None,
                  boots[0] if boots else None)


def kernel_options(cmdline: str) -> str:
    """This boot's kernel command line without what each entry sets for itself."""
    return " ".join(w for w in shlex.split(cmdline) if not w.startswith(DROPPED))


def entry_name(version: str, tries: int | None = TRIES) -> str:
    """The entry file: counted (`+3`: systemd-boot's boot counting) until the version proved itself."""
    return f"{ENTRY_PREFIX}{version}" + (f"+{tries}" if tries is not None else "") + ".conf"


def entry(version: str, slot: Part, options: str, machine_id: str, order: str = "0") -> str:
    """A Boot Loader Specification entry on XBOOTLDR: its kernel and initrd beside it, its root named.
    systemd-boot boots the entry with the highest `version` first (among those with tries left),
    and image versions (`git describe`, a bare commit hash without a tag) need not sort: the
    entry's version starts with `order`, the time of its install ("0": the version that ran)."""
    return (f"title Appliance {version}\nsort-key appliance\nversion {order}-{version}\n"
            f"linux /{ENTRY_PREFIX}{version}/vmlinuz\ninitrd /{ENTRY_PREFIX}{version}/initrd\n"
            f"options root=PARTUUID={slot.partuuid} {options} systemd.machine_id={machine_id}\n")


def version_of(name: str) -> str | None:
    """The version an entry file of ours names (counted or not), else None."""
    m = re.fullmatch(rf"{ENTRY_PREFIX}(.+?)(?:\+\d+(?:-\d+)?)?\.conf", name)
    return m.group(1) if m else None


def entries_naming(entries: Path, slot: Part) -> list[Path]:
    """The entries on XBOOTLDR that boot `slot`: they go before the slot is written."""
    mark = f"root=PARTUUID={slot.partuuid}"
    return sorted(p for p in entries.glob(f"{ENTRY_PREFIX}*.conf") if mark in p.read_text().split())


def slot_label(version: str) -> str:
    """A GPT label holds 36 UTF-16 characters."""
    return f"root-{version}"[:36]


@dataclass
class Update:
    """One install, its side effects injected (`run` takes argv, returns stdout) so that the
    order of what it does is tested on the host."""
    bundle: Path
    public_key: str
    run: Callable[[list[str]], str]
    boot_mount: Path            # where XBOOTLDR is mounted
    running_version: str
    running_kernel: Path        # this boot's kernel and initrd (the ESP's, or XBOOTLDR's)
    running_initrd: Path
    say: Callable[[str], None] = print
    installed_at: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S", time.gmtime()))

    def install(self, lay: Layout, cmdline: str, machine_id: str) -> str:
        """Steps 1-4: the bundle into the other slot (unless `stage` wrote it already, which is
        checked, not trusted), then the entries that boot it next, on trial."""
        version = self.staged(lay) or self.stage(lay)
        assert lay.other
        entries = self.boot_mount / "loader/entries"
        options = kernel_options(cmdline)
        # the running version gets an entry naming its slot (the image's own on the ESP names none)
        self.write(entries / entry_name(self.running_version, None),
                   entry(self.running_version, lay.running, options, machine_id),
                   {self.running_kernel: "vmlinuz", self.running_initrd: "initrd"}, self.running_version)
        self.write(entries / entry_name(version), entry(version, lay.other, options, machine_id, self.installed_at),
                   {self.bundle / "vmlinuz": "vmlinuz", self.bundle / "initrd": "initrd"}, version)
        (self.boot_mount / f"{ENTRY_PREFIX}{version}" / STAGED).unlink(missing_ok=True)
        self.say(f"{version} installed in {lay.other.device}: it boots next, {TRIES} tries before "
                 f"{self.running_version} boots again by itself")
        return version

    def stage(self, lay: Layout) -> str:
        """Steps 1-3 with no entry: the slot written and named, the kernel and initrd beside, and
        a note of the signed sums it came from (STAGED). Nothing boots it until `install`: a
        rolling upgrade stages every node at once and arms each in its turn in seconds."""
        from builder import bundle  # the image stages builder/: one verifier on host and node
        refused = lay.refusal()
        if refused:
            raise UpdateError(refused)
        assert lay.other and lay.boot
        try:
            version = bundle.verify(self.bundle, self.public_key)
        except bundle.BundleError as e:
            raise UpdateError(f"refused, nothing changed: {e}") from None
        if version == self.running_version:
            raise UpdateError(f"this node runs {version} already: nothing to do")
        size = self.root_size()
        if size > lay.other.size:
            raise UpdateError(f"refused, nothing changed: the bundle's root is {size / 2**20:.0f} MiB, the slot "
                              f"{lay.other.size / 2**20:.0f} MiB: re-flash with the new image")
        for old in entries_naming(self.boot_mount / "loader/entries", lay.other):
            old.unlink()
            self.say(f"removed {old.name}: its slot {lay.other.device} is about to be written")
        self.run(["sfdisk", "--part-label", lay.disk, str(lay.other.number), EMPTY])
        directory = self.boot_mount / f"{ENTRY_PREFIX}{version}"
        shutil.rmtree(directory, ignore_errors=True)  # an earlier stage's files, maybe of another build
        self.say(f"writing {version}'s root to {lay.other.device} ({size / 2**20:.0f} MiB)")
        self.run(["sh", "-c", f"zstd -dc {shlex.quote(str(self.bundle / 'root.ext4.zst'))} | "
                              f"dd of={shlex.quote(lay.other.device)} bs=4M iflag=fullblock oflag=direct "
                              "conv=fsync status=none"])  # direct: the slot does not crowd the page cache
        self.run(["sfdisk", "--part-label", lay.disk, str(lay.other.number), slot_label(version)])
        self.copy_files(directory, {self.bundle / "vmlinuz": "vmlinuz", self.bundle / "initrd": "initrd"})
        note = json.dumps({"slot": lay.other.partuuid, "sums": sha256(self.bundle / bundle.SUMS)})
        # by hand, not files.write_atomic: XBOOTLDR is vfat, where its fchmod can be refused
        (directory / f".{STAGED}.new").write_text(note + "\n")
        (directory / f".{STAGED}.new").rename(directory / STAGED)
        self.run(["sync", "-f", str(directory)])
        self.say(f"{version} staged in {lay.other.device}: nothing boots it until `appliance update` arms it")
        return version

    def staged(self, lay: Layout) -> str | None:
        """The bundle's version if `stage` wrote it into the other slot: its signature holds, the
        note names this slot and these signed sums, the slot bears the version's label and the
        kernel and initrd beside the note are the signed ones. Else None (the whole install)."""
        from builder import bundle
        if lay.refusal() or not lay.other:
            return None
        try:
            sums = bundle.signed_sums(self.bundle, self.public_key)
            version = (self.bundle / bundle.VERSION).read_text().strip()
            directory = self.boot_mount / f"{ENTRY_PREFIX}{version}"
            note = json.loads((directory / STAGED).read_text())
        except (bundle.BundleError, OSError, ValueError):
            return None
        if (note.get("slot") != lay.other.partuuid or note.get("sums") != sha256(self.bundle / bundle.SUMS)
                or lay.other.label != slot_label(version) or version == self.running_version
                or sha256(self.bundle / bundle.VERSION) != sums[bundle.VERSION]
                or any(sha256(directory / name) != sums[name] for name in ("vmlinuz", "initrd"))):
            return None
        self.say(f"{version} was staged in {lay.other.device}: arming it")
        return version

    def root_size(self) -> int:
        """The root's size, from zstd's frame header (the builder writes it)."""
        listed = self.run(["zstd", "-lv", str(self.bundle / "root.ext4.zst")])
        m = re.search(r"Decompressed Size:.*\((\d+) B\)", listed)
        if not m:
            raise UpdateError(f"{self.bundle / 'root.ext4.zst'}: zstd names no decompressed size")
        return int(m.group(1))

    def copy_files(self, directory: Path, files: dict[Path, str]) -> None:
        """Each file copied to `directory` under its name, unless there: whole or not at all."""
        directory.mkdir(parents=True, exist_ok=True)
        for src, name in files.items():
            if not (directory / name).exists():
                self.run(["cp", str(src), str(directory / f".{name}.new")])
                (directory / f".{name}.new").rename(directory / name)

    def write(self, path: Path, text: str, files: dict[Path, str], version: str) -> None:
        """An entry and the files it boots, the files first (an entry never names a missing kernel)."""
        self.copy_files(self.boot_mount / f"{ENTRY_PREFIX}{version}", files)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not any(p for p in path.parent.glob(f"{ENTRY_PREFIX}{version}*.conf") if version_of(p.name) == version):
            tmp = path.with_name(f".{path.name}.new")
            tmp.write_text(text)
            tmp.rename(path)
        self.run(["sync", "-f", str(path.parent)])


def firmware_refusal(efi: Path = Path("/sys/firmware/efi")) -> str | None:
    """Why a node booted by legacy BIOS is not updated in place: grub there boots the one root
    its grub.cfg names and has no boot counting of ours, so a new slot would never boot (or
    never fall back). The floor, documented: re-flash, or switch the machine to UEFI."""
    if efi.is_dir():
        return None
    return ("this node boots by legacy BIOS, where updates in place are not supported (no boot counting, "
            "so no way back): re-flash it with the new image, or boot it by UEFI")


def lsblk() -> dict:
    from builder.run import run
    out = run(["lsblk", "--json", "--bytes", "-o", "NAME,PATH,PKNAME,PARTUUID,PARTLABEL,PARTTYPE,SIZE"]).stdout
    return json.loads(out)


MOUNTS = Path("/run/appliance/update")


def image_version(os_release: Path = Path("/usr/lib/os-release")) -> str:
    """The running root's version; an image from before versioned builds cannot say which slot
    holds what, and is refused."""
    from firstboot.appliance import image_version as read
    version = read(os_release)
    if not version:
        raise UpdateError("/usr/lib/os-release names no IMAGE_VERSION: an image older than versioned builds")
    return version


def esp_entry(esp: Path) -> tuple[Path, list[Path]]:
    """The kernel and initrds of the image's own entry on the ESP (mkosi writes one)."""
    for conf in sorted((esp / "loader/entries").glob("*.conf")):
        fields = [line.split(None, 1) for line in conf.read_text().splitlines() if " " in line]
        linux = [v.strip() for k, v in fields if k == "linux"]
        initrds = [v.strip() for k, v in fields if k == "initrd"]
        if linux and initrds:
            return esp / linux[0].lstrip("/"), [esp / i.lstrip("/") for i in initrds]
    raise UpdateError(f"no boot entry with a kernel on the ESP ({esp / 'loader/entries'})")


def main(bundle_dir: str, reboot: bool = True, stage: bool = False) -> int:
    """`appliance update BUNDLE_DIR [--no-reboot | --stage]` on the node."""
    from builder.run import run
    from firstboot import state as applied
    refused = firmware_refusal()
    if refused:
        raise UpdateError(refused)
    public_key = applied.read().get("data", {}).get("update_key")
    if not public_key:
        raise UpdateError("this node's seed names no update key: re-seed it (`python -m builder apply "
                          "PROFILE --reboot`) with a builder that signs bundles")
    root = run(["findmnt", "-n", "-o", "SOURCE", "/"]).stdout.strip()
    disks = lsblk()
    lay = layout(disks, root)
    refused = lay.refusal()
    if refused:
        raise UpdateError(refused)
    assert lay.boot
    esp = next(p for d in disks["blockdevices"] for p in d.get("children") or []
               if (p.get("parttype") or "").lower() == contract.GPT_ESP
               and p.get("pkname") == lay.disk.rsplit("/", 1)[1])
    mounted = []
    try:
        for name, device in (("esp", esp["path"]), ("boot", lay.boot.device)):
            (MOUNTS / name).mkdir(parents=True, exist_ok=True)
            run(["mount", device, str(MOUNTS / name)])
            mounted.append(MOUNTS / name)
        version = image_version()
        own = MOUNTS / "boot" / f"{ENTRY_PREFIX}{version}"
        if (own / "vmlinuz").exists():
            kernel, initrd = own / "vmlinuz", own / "initrd"
        else:  # the image's first version boots from the ESP: its two initrds become one
            kernel, initrds = esp_entry(MOUNTS / "esp")
            initrd = MOUNTS / "initrd"
            with open(initrd, "wb") as out:
                for part in initrds:
                    out.write(part.read_bytes())

        def sh(argv: list[str]) -> str:
            return run(argv).stdout
        u = Update(Path(bundle_dir), public_key, sh, MOUNTS / "boot", version, kernel, initrd)
        if stage:
            u.stage(lay)
            return 0
        u.install(lay, Path("/proc/cmdline").read_text(), Path("/etc/machine-id").read_text().strip())
    finally:
        for m in reversed(mounted):
            run(["umount", str(m)], check=False)
        (MOUNTS / "initrd").unlink(missing_ok=True)
    if reboot:
        print("rebooting into it", flush=True)
        run(["systemctl", "reboot"])
    return 0
