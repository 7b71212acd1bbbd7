"""The host tools image builds and VM tests need, installed on demand (Debian, as root).

mkosi 24 comes from bookworm-backports (bookworm's own is too old), and so does a
systemd-boot that ships `bootctl`; the rest is from the release itself.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from builder.run import run

# what must be found -> the Debian package that provides it
TOOLS = {
    "mkosi": "mkosi", "bootctl": "systemd-boot", "depmod": "kmod", "cpio": "cpio",
    "zstd": "zstd", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
    "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "ip": "iproute2",
}
FILES = {"/usr/share/OVMF/OVMF_CODE_4M.fd": "ovmf"}
# only for the acceptance suite: the howto's "browser" and an HTTP client in the test namespace
TEST_TOOLS = {"chromium": "chromium", "curl": "curl"}
FROM_BACKPORTS = {"mkosi", "systemd-boot"}
MIN_MKOSI = 24
BACKPORTS_FILE = Path("/etc/apt/sources.list.d/backports.sources")


class HostError(Exception):
    """The host lacks tools and they cannot be installed here; says what to run."""


def mkosi_version() -> int | None:
    if not shutil.which("mkosi"):
        return None
    out = run(["mkosi", "--version"], check=False).stdout
    match = re.search(r"(\d+)", out)
    return int(match.group(1)) if match else None


def missing(tests: bool = False) -> list[str]:
    """Debian packages to install, in a stable order."""
    tools = {**TOOLS, **TEST_TOOLS} if tests else TOOLS
    pkgs = {pkg for tool, pkg in tools.items() if not shutil.which(tool)}
    pkgs |= {pkg for path, pkg in FILES.items() if not Path(path).exists()}
    if (mkosi_version() or 0) < MIN_MKOSI:
        pkgs.add("mkosi")
    return sorted(pkgs)


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host already uses (the only one reachable in some networks)."""
    texts = [p.read_text() for p in sorted(sources_dir.glob("sources.list.d/*.sources"))]
    texts += [p.read_text() for p in sources_dir.glob("sources.list") if p.exists()]
    for text in texts:
        for uri in re.findall(r"(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def install_command(pkgs: list[str], release: str) -> list[list[str]]:
    plain = [p for p in pkgs if p not in FROM_BACKPORTS]
    bpo = [p for p in pkgs if p in FROM_BACKPORTS]
    cmds = [["apt-get", "update", "-q"]]
    base = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    if plain:
        cmds.append(base + plain)
    if bpo:
        cmds.append(base + ["-t", f"{release}-backports"] + bpo)
    return cmds


def ensure(release: str = "bookworm", tests: bool = False) -> list[str]:
    """Install what is missing; returns the packages installed (empty: nothing to do)."""
    pkgs = missing(tests)
    if not pkgs:
        return []
    cmds = install_command(pkgs, release)
    if os.geteuid() != 0:
        shown = "\n".join("  sudo " + " ".join(c) for c in cmds)
        raise HostError(f"missing host packages: {', '.join(pkgs)}. As root, run:\n{shown}"
                        + (f"\n(with {release}-backports in the apt sources)"
                           if set(pkgs) & FROM_BACKPORTS else ""))
    if set(pkgs) & FROM_BACKPORTS and not BACKPORTS_FILE.exists():
        BACKPORTS_FILE.write_text(
            f"Types: deb\nURIs: {debian_mirror()}\nSuites: {release}-backports\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in cmds:
        run(cmd, capture=False, env=env)
    still = missing(tests)
    if still:
        raise HostError(f"still missing after installing: {', '.join(still)}")
    return pkgs
