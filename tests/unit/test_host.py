"""Host set-up: which apt commands a machine gets, decided without touching apt."""
from pathlib import Path

from builder import host


def test_bookworm_takes_mkosi_systemd_boot_and_e2fsprogs_from_its_backports():
    cmds = host.install_command(["cpio", "e2fsprogs", "mkosi", "ovmf"], "bookworm")
    assert cmds[0] == ["apt-get", "update", "-q"]
    assert cmds[1][-2:] == ["cpio", "ovmf"]
    assert cmds[2][-4:] == ["-t", "bookworm-backports", "e2fsprogs", "mkosi"]


def test_a_later_release_installs_everything_from_its_own_suite():
    cmds = host.install_command(["e2fsprogs", "mkosi"], "trixie")
    assert len(cmds) == 2
    assert "-t" not in cmds[1] and cmds[1][-2:] == ["e2fsprogs", "mkosi"]


def test_host_release_comes_from_os_release(tmp_path: Path):
    (tmp_path / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n'
                                         'VERSION_CODENAME=trixie\nID=debian\n')
    assert host.host_release(tmp_path / "os-release") == "trixie"
    assert host.host_release(tmp_path / "missing") == "bookworm"


def test_mirror_is_the_one_the_host_already_uses(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n")
    assert host.debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert host.debian_mirror(tmp_path) == "http://other.example/debian"


def test_an_older_package_than_the_minimum_counts_as_missing():
    # e2fsprogs is installed on every Debian host; no real version is that new
    assert host.too_old("e2fsprogs", "99")
    assert not host.too_old("e2fsprogs", "1.0")
    assert host.too_old("no-such-package-here", "1.0")


def test_bookworm_takes_qemu_from_backports_past_the_tcg_translation_race():
    cmds = host.install_command(["ovmf", "qemu-system-x86", "qemu-utils"], "bookworm")
    assert cmds[1][-1] == "ovmf"
    assert cmds[2][-3:] == ["bookworm-backports", "qemu-system-x86", "qemu-utils"]
    assert host.MINIMUM["qemu-system-x86"] == host.MINIMUM["qemu-utils"]
