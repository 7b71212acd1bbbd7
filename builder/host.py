"""The host tools image builds and VM tests need, installed on demand (Debian, as root).

On a bookworm host, mkosi 24, a systemd-boot that ships `bootctl` and e2fsprogs 1.47.1 (whose
mkfs.ext4 clamps inode times to SOURCE_DATE_EPOCH: reproducible root file systems) come from
bookworm-backports; the rest is from the host's release. Backports are those of the host's
release, whatever release the image is built for.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from builder.errors import ApplianceError
from builder.run import run

# what must be found -> the Debian package that provides it
TOOLS = {
    "mkosi": "mkosi", "bootctl": "systemd-boot", "depmod": "kmod", "cpio": "cpio",
    "zstd": "zstd", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
    "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "ip": "iproute2",
    "grub-mkimage": "grub-common",  # the legacy-BIOS boot loader beside systemd-boot
    # cutting the root file system and partition to size (image.shrink_root)
    "resize2fs": "e2fsprogs", "sfdisk": "fdisk", "losetup": "mount",
}
FILES = {"/usr/share/OVMF/OVMF_CODE_4M.fd": "ovmf",
         "/usr/lib/grub/i386-pc/grub-bios-setup": "grub-pc-bin"}
# only for the acceptance suite: the howto's "browser" and an HTTP client in the test namespace
TEST_TOOLS = {"chromium": "chromium", "curl": "curl", "socat": "socat",  # socat: `up`'s browser forward
              "prometheus": "prometheus", "promtool": "prometheus",  # the lab's Prometheus, the rules' tests
              "/lib/systemd/systemd-journal-remote": "systemd-journal-remote",  # the lab's log receiver
              "wrk": "wrk",  # `make bench DATAPLANE=1`: requests/s and latency through a VIP
              "tcpdump": "tcpdump",  # and each leg of a request, timed on the taps
              "ping": "iputils-ping"}  # and the idle round trips beside them
# per host release: what its own suite has too old (later releases have all of it)
# grub: mkosi runs the host's grub-mkimage over the image's i386-pc modules; trixie's are 2.12;
# systemd-journal-remote: it must match the libsystemd-shared that backports' systemd-boot brought;
# QEMU: 7.2's multi-threaded TCG can run code translated before the guest patched it (fixed in 8.1,
# "accel/tcg: Always lock pages before translation"): a guest kernel flipping a static key died
# of an int3 in inet6_ehashfn during a CI run (docs/benchmarks.md, session 23)
FROM_BACKPORTS = {"bookworm": {"mkosi", "systemd-boot", "e2fsprogs", "grub-common", "grub-pc-bin",
                               "systemd-journal-remote", "qemu-system-x86", "qemu-utils"}}
# installed but too old counts as missing
MINIMUM = {"mkosi": "24", "e2fsprogs": "1.47.1", "grub-common": "2.12", "grub-pc-bin": "2.12",
           "qemu-system-x86": "1:8.1", "qemu-utils": "1:8.1"}
BACKPORTS_FILE = Path("/etc/apt/sources.list.d/backports.sources")


class HostError(ApplianceError):
    """The host lacks tools and they cannot be installed here; says what to run."""


def too_old(pkg: str, minimum: str) -> bool:
    """True when the installed Debian package is older than minimum (or not installed)."""
    out = run(["dpkg-query", "-W", "-f", "${Version}", pkg], check=False).stdout.strip()
    if not out:
        return True
    return run(["dpkg", "--compare-versions", out, "lt", minimum], check=False).returncode == 0


def missing(tests: bool = False) -> list[str]:
    """Debian packages to install, in a stable order."""
    tools = {**TOOLS, **TEST_TOOLS} if tests else TOOLS
    pkgs = {pkg for tool, pkg in tools.items() if not shutil.which(tool)}
    pkgs |= {pkg for path, pkg in FILES.items() if not Path(path).exists()}
    pkgs |= {pkg for pkg, minimum in MINIMUM.items() if too_old(pkg, minimum)}
    return sorted(pkgs)


def host_release(os_release: Path = Path("/etc/os-release")) -> str:
    """The host's Debian codename: backports must match the host, not the image."""
    text = os_release.read_text() if os_release.exists() else ""
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    return match.group(1) if match else "bookworm"


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host already uses (the only one reachable in some networks)."""
    texts = [p.read_text() for p in sorted(sources_dir.glob("sources.list.d/*.sources"))]
    texts += [p.read_text() for p in sources_dir.glob("sources.list") if p.exists()]
    for text in texts:
        for uri in re.findall(r"^(?:URIs:|deb(?:[ \t]+\[[^\]]*\])?)[ \t]+(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def install_command(pkgs: list[str], release: str) -> list[list[str]]:
    backports = FROM_BACKPORTS.get(release, set())
    plain = [p for p in pkgs if p not in backports]
    bpo = [p for p in pkgs if p in backports]
    cmds = [["apt-get", "update", "-q"]]
    base = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    if plain:
        cmds.append(base + plain)
    if bpo:
        cmds.append(base + ["-t", f"{release}-backports"] + bpo)
    return cmds


def ensure(tests: bool = False) -> list[str]:
    """Install what is missing; returns the packages installed (empty: nothing to do)."""
    pkgs = missing(tests)
    if not pkgs:
        return []
    release = host_release()
    cmds = install_command(pkgs, release)
    needs_backports = bool(set(pkgs) & FROM_BACKPORTS.get(release, set()))
    if os.geteuid() != 0:
        shown = "\n".join("  sudo " + " ".join(c) for c in cmds)
        raise HostError(f"missing host packages: {', '.join(pkgs)}. As root, run:\n{shown}"
                        + (f"\n(with {release}-backports in the apt sources)" if needs_backports else ""))
    if needs_backports and not BACKPORTS_FILE.exists():
        BACKPORTS_FILE.write_text(
            f"Types: deb\nURIs: {debian_mirror()}\nSuites: {release}-backports\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in cmds:
        run(cmd, capture=False, env=env)
    if "prometheus" in pkgs and Path("/run/systemd/system").is_dir():
        # Debian starts the package's own server on *:9090; the lab runs its own, in its namespace
        run(["systemctl", "disable", "--now", "prometheus.service"], capture=False)
    still = missing(tests)
    if still:
        raise HostError(f"still missing after installing: {', '.join(still)}")
    return pkgs
