"""`appliance update` (firstboot/update.py): the slots read from lsblk, the entries it writes,
and the order of an install, on the host with its side effects recorded."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder import bundle, contract
from firstboot import update

ESP = contract.GPT_ESP


def disk(*parts, name="vda"):
    return {"blockdevices": [{"name": name, "path": f"/dev/{name}", "pkname": None, "children": [
        {"name": f"{name}{i}", "path": f"/dev/{name}{i}", "pkname": name, "partuuid": uuid, "partlabel": label,
         "parttype": ptype, "size": size} for i, (uuid, label, ptype, size) in enumerate(parts, 1)]}]}


FULL = disk(("E5-0", "esp", ESP, 64 << 20), ("B1-0", "linux", contract.GPT_BIOS, 1 << 20),
            ("AAAA-1", "root-x86-64", contract.GPT_ROOT, 1 << 30), ("BBBB-2", "_empty", contract.GPT_ROOT, 1 << 30),
            ("CCCC-3", "appliance-boot", contract.GPT_XBOOTLDR, 160 << 20),
            ("DDDD-4", "appliance-state", "0fc63daf-8483-4772-8e79-3d69d8477de4", 2 << 30))


def test_the_slots_of_a_disk_with_room_and_of_one_without():
    lay = update.layout(FULL, "/dev/vda3")
    assert (lay.disk, lay.running.partuuid, lay.other.device, lay.boot.device) == (
        "/dev/vda", "aaaa-1", "/dev/vda4", "/dev/vda5")
    assert lay.refusal() is None and lay.other.number == 4
    # running from B after an update: A is the other slot
    assert update.layout(FULL, "/dev/vda4").other.device == "/dev/vda3"
    small = disk(("E5-0", "esp", ESP, 64 << 20), ("AAAA-1", "root-x86-64", contract.GPT_ROOT, 400 << 20))
    assert "no second root slot" in update.layout(small, "/dev/vda2").refusal()
    with pytest.raises(update.UpdateError, match="/dev/sda3 is not a partition"):
        update.layout(FULL, "/dev/sda3")


def test_every_entry_names_its_root_and_keeps_the_machine():
    cmdline = ("initrd=\\debian\\initrd console=tty0 console=ttyS0,115200 net.ifnames=0 quiet "
               "root=PARTUUID=aaaa-1 systemd.machine_id=0123 systemd.default_device_timeout_sec=300")
    options = update.kernel_options(cmdline)
    assert options == "console=tty0 console=ttyS0,115200 net.ifnames=0 quiet systemd.default_device_timeout_sec=300"
    lay = update.layout(FULL, "/dev/vda3")
    text = update.entry("1.4", lay.other, options, "9ea0")
    assert "options root=PARTUUID=bbbb-2 console=tty0" in text and text.endswith("systemd.machine_id=9ea0\n")
    assert "linux /appliance-1.4/vmlinuz\ninitrd /appliance-1.4/initrd\n" in text
    assert update.entry_name("1.4") == "appliance-1.4+3.conf" and update.entry_name("1.3", None) == "appliance-1.3.conf"
    for name in ("appliance-1.4+3.conf", "appliance-1.4+1-2.conf", "appliance-1.4+0-3.conf", "appliance-1.4.conf"):
        assert update.version_of(name) == "1.4", name
    assert update.version_of("debian-6.12.conf") is None
    assert len(update.slot_label("v" * 50)) == 36


@pytest.fixture
def signed(tmp_path):
    """A bundle signed by a fresh update key (its root a few KiB of zstd), and that key."""
    b = tmp_path / "bundle"
    b.mkdir()
    (tmp_path / "root.ext4").write_bytes(b"\0" * 65536)
    subprocess.run(["zstd", "-q", str(tmp_path / "root.ext4"), "-o", str(b / "root.ext4.zst")], check=True)
    (b / "vmlinuz").write_bytes(b"kernel")
    (b / "initrd").write_bytes(b"initrd")
    (b / "VERSION").write_text("1.4\n")
    key = bundle.signing_key(tmp_path / "secrets")
    bundle.sign(b, key)
    return b, key.with_suffix(".pub").read_text()


def installer(tmp_path, b, public_key, ran):
    boot = tmp_path / "xbootldr"
    (tmp_path / "esp").mkdir(exist_ok=True)
    for name in ("vmlinuz", "initrd"):
        (tmp_path / "esp" / name).write_text(f"running {name}")

    def run(argv):
        ran.append(argv)
        if argv[0] == "cp":
            Path(argv[2]).write_bytes(Path(argv[1]).read_bytes())
        if argv[0] == "zstd":
            return subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return ""
    return update.Update(b, public_key, run, boot, "1.3", tmp_path / "esp/vmlinuz", tmp_path / "esp/initrd",
                         say=lambda line: None, installed_at="20261203182500")


def test_an_install_forgets_the_other_slot_before_writing_it_and_adds_a_counted_entry(tmp_path, signed):
    b, public_key = signed
    ran: list[list[str]] = []
    u = installer(tmp_path, b, public_key, ran)
    entries = tmp_path / "xbootldr/loader/entries"
    entries.mkdir(parents=True)
    (entries / "appliance-1.2.conf").write_text("linux /appliance-1.2/vmlinuz\noptions root=PARTUUID=bbbb-2 quiet\n")
    lay = update.layout(FULL, "/dev/vda3")
    assert u.install(lay, "quiet root=PARTUUID=aaaa-1", "9ea0") == "1.4"
    assert sorted(p.name for p in entries.iterdir()) == ["appliance-1.3.conf", "appliance-1.4+3.conf"]
    assert "root=PARTUUID=aaaa-1 quiet systemd.machine_id=9ea0" in (entries / "appliance-1.3.conf").read_text()
    assert "root=PARTUUID=bbbb-2 quiet" in (entries / "appliance-1.4+3.conf").read_text()
    # systemd-boot boots the highest version first: the install's time, not the image versions
    # (bare commit hashes), decides; the version that ran sorts below it
    assert "version 20261203182500-1.4\n" in (entries / "appliance-1.4+3.conf").read_text()
    assert "version 0-1.3\n" in (entries / "appliance-1.3.conf").read_text()
    assert (tmp_path / "xbootldr/appliance-1.3/vmlinuz").read_text() == "running vmlinuz"
    assert (tmp_path / "xbootldr/appliance-1.4/initrd").read_bytes() == b"initrd"
    steps = [a[0] if a[0] != "sfdisk" else f"label {a[-1]}" for a in ran if a[0] not in ("cp", "sync")]
    assert steps == ["zstd", "label _empty", "sh", "label root-1.4"]  # checked, forgotten, written, named
    assert "dd of=/dev/vda4 " in ran[[a[0] for a in ran].index("sh")][2]
    assert not (tmp_path / "xbootldr/appliance-1.4" / update.STAGED).exists()


def staged_layout(lay: update.Layout, label: str) -> update.Layout:
    """The layout lsblk shows once the other slot bears `label`."""
    return update.Layout(lay.disk, lay.running, update.Part(lay.other.device, lay.other.partuuid, label,
                                                            lay.other.parttype, lay.other.size), lay.boot)


def test_a_staged_slot_is_armed_by_its_entries_alone_once_checked_again(tmp_path, signed):
    """`builder upgrade` stages every node at once (the slot written, no entry: nothing boots it);
    the install in a node's turn checks what was staged (signature, note, label, kernel) and
    writes the entries alone. Anything that does not match is installed whole again."""
    b, public_key = signed
    ran: list[list[str]] = []
    lay = update.layout(FULL, "/dev/vda3")
    assert installer(tmp_path, b, public_key, ran).stage(lay) == "1.4"
    entries = tmp_path / "xbootldr/loader/entries"
    assert not entries.exists() or not list(entries.iterdir())  # nothing boots it yet
    assert [a[0] for a in ran if a[0] == "sh"] == ["sh"]
    assert (tmp_path / "xbootldr/appliance-1.4/vmlinuz").read_bytes() == b"kernel"
    after = staged_layout(lay, "root-1.4")  # what lsblk says once the stage named the slot
    ran.clear()
    assert installer(tmp_path, b, public_key, ran).install(after, "quiet root=PARTUUID=aaaa-1", "9ea0") == "1.4"
    assert "sh" not in [a[0] for a in ran] and not [a for a in ran if a[0] == "sfdisk"]  # armed, not written
    assert sorted(p.name for p in entries.iterdir()) == ["appliance-1.3.conf", "appliance-1.4+3.conf"]
    assert not (tmp_path / "xbootldr/appliance-1.4" / update.STAGED).exists()  # armed once


@pytest.mark.parametrize("spoil", ["kernel", "label", "slot", "sums"])
def test_a_staged_slot_that_does_not_match_is_written_again(tmp_path, signed, spoil):
    b, public_key = signed
    lay = update.layout(FULL, "/dev/vda3")
    installer(tmp_path, b, public_key, []).stage(lay)
    after = staged_layout(lay, "root-1.4")
    staged = tmp_path / "xbootldr/appliance-1.4"
    if spoil == "kernel":  # changed on the node since: what boots must be what was signed
        (staged / "vmlinuz").write_bytes(b"another kernel")
    elif spoil == "label":  # the stage did not finish (a power loss mid-write leaves "_empty")
        after = staged_layout(lay, update.EMPTY)
    elif spoil == "slot":  # staged into the other slot of another boot
        after = update.layout(FULL, "/dev/vda4")
    else:  # another build of the same version, signed anew
        (b / "VERSION").write_text("1.4\n\n")
        bundle.sign(b, bundle.signing_key(tmp_path / "secrets"))
    ran: list[list[str]] = []
    u = installer(tmp_path, b, public_key, ran)
    assert u.staged(after) is None
    if spoil != "slot":
        u.install(after, "quiet", "9ea0")
        assert "sh" in [a[0] for a in ran]  # the whole install, the slot written again
        assert (staged / "vmlinuz").read_bytes() == b"kernel"  # the signed one, copied anew


def test_a_bundle_that_is_not_as_signed_or_does_not_fit_changes_nothing(tmp_path, signed):
    b, public_key = signed
    lay = update.layout(FULL, "/dev/vda3")
    (b / "vmlinuz").write_bytes(b"another kernel")
    ran: list[list[str]] = []
    with pytest.raises(update.UpdateError, match="refused, nothing changed: .*vmlinuz: missing or not the file"):
        installer(tmp_path, b, public_key, ran).install(lay, "quiet", "9ea0")
    assert ran == [] and not (tmp_path / "xbootldr").exists()
    (b / "vmlinuz").write_bytes(b"kernel")
    small = update.Layout(lay.disk, lay.running, update.Part("/dev/vda4", "bbbb-2", "_empty", contract.GPT_ROOT, 4096),
                          lay.boot)
    with pytest.raises(update.UpdateError, match="the bundle's root is 0 MiB, the slot 0 MiB"):
        installer(tmp_path, b, public_key, ran).install(small, "quiet", "9ea0")
    assert [a[0] for a in ran] == ["zstd"]
    with pytest.raises(update.UpdateError, match="runs 1.4 already"):
        u = installer(tmp_path, b, public_key, [])
        u.running_version = "1.4"
        u.install(lay, "quiet", "9ea0")


def test_the_running_version_and_the_images_own_kernel_are_read_from_the_root_and_esp(tmp_path):
    osr = tmp_path / "os-release"
    osr.write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nIMAGE_VERSION="0.30-12-g7e8697c"\n')
    assert update.image_version(osr) == "0.30-12-g7e8697c"
    osr.write_text('PRETTY_NAME="Debian"\n')
    with pytest.raises(update.UpdateError, match="names no IMAGE_VERSION"):
        update.image_version(osr)
    entries = tmp_path / "esp/loader/entries"
    entries.mkdir(parents=True)
    with pytest.raises(update.UpdateError, match="no boot entry with a kernel"):
        update.esp_entry(tmp_path / "esp")
    (entries / "debian-6.12.conf").write_text(  # what mkosi writes
        "title debian 6.12\nversion 6.12\nlinux /debian/6.12/vmlinuz\noptions quiet\n"
        "initrd /debian/initrd\ninitrd /debian/6.12/kernel-modules.initrd\n")
    kernel, initrds = update.esp_entry(tmp_path / "esp")
    assert kernel == tmp_path / "esp/debian/6.12/vmlinuz"
    assert initrds == [tmp_path / "esp/debian/initrd", tmp_path / "esp/debian/6.12/kernel-modules.initrd"]


def test_a_node_booted_by_legacy_bios_is_refused_with_the_way_out(tmp_path):
    assert update.firmware_refusal(tmp_path / "efi") is not None
    assert "re-flash" in update.firmware_refusal(tmp_path / "efi")
    (tmp_path / "efi").mkdir()
    assert update.firmware_refusal(tmp_path / "efi") is None


@pytest.mark.parametrize("comes_back_on", ["1.4", "1.3"])
def test_builder_update_checks_copies_installs_reboots_and_names_a_rollback(tmp_path, signed, monkeypatch,
                                                                            comes_back_on):
    """The host checks the bundle before any node is touched; a node back on its old version
    rolled back by itself, which is an error, not a success."""
    import json

    from builder import day2, profile, seed
    from builder.remote import Reach
    from tests.conftest import ROOT
    b, public_key = signed
    cluster = profile.load(ROOT / "profiles" / "three-web.toml")
    did: list[str] = []
    booted = {"v": "1.3", "boot": "boot-1"}
    # looks after the reboot: the old system still shutting down (its gate passed long ago), the
    # new boot before its gate, the new boot past it
    looks = [("boot-1", True), ("boot-2", False), ("boot-2", True)]
    seen = []

    def run(node, reach, command, timeout=30, stdin=None):
        if command.endswith(" config"):
            return json.dumps({"version": booted["v"]})
        if command == f"cat {day2.BOOT_ID}":
            return booted["boot"] + "\n"
        if command == (f"cat {day2.BOOT_ID} && systemctl is-active --quiet {contract.READY_UNIT} && "
                       f"{contract.APPLIANCE_CLI} status --json"):
            boot, passed = looks[len(seen)]
            seen.append(boot)
            if boot == "boot-2":  # the old system answers as the old version till it is gone
                booted["v"] = comes_back_on
            if not passed:
                raise day2.remote.RemoteError(f"{node.name}: exit 3")
            return boot + "\n" + json.dumps({"answering": True}) + "\n"
        if command.endswith("status --json"):
            return json.dumps({"answering": True})
        did.append(command.split()[0] if not command.startswith(contract.APPLIANCE_CLI) else command.split()[1])
        return ""
    monkeypatch.setattr(day2.remote, "run", run)
    monkeypatch.setattr(day2.remote, "send", lambda node, reach, local, there: did.append(f"send {there}"))
    monkeypatch.setattr(day2.remote, "forget", lambda node, reach: None)
    monkeypatch.setattr(day2.time, "sleep", lambda s: None)

    def op(key):
        return day2.Operation(cluster, Reach(Path("kh")), seed.Keys("0" * 64, update_key=key), lambda line: None)
    other = bundle.signing_key(tmp_path / "other").with_suffix(".pub").read_text()
    with pytest.raises(day2.Day2Error, match="refused before touching app2"):
        op(other).update("app2", b, timeout=5)
    assert did == []
    if comes_back_on == "1.4":
        op(public_key).update("app2", b, timeout=5)
    else:
        with pytest.raises(day2.Day2Error, match="came back on 1.3, not 1.4: .* rolled back by itself"):
            op(public_key).update("app2", b, timeout=5)
    assert did == [f"send {contract.UPDATE_INCOMING}", "update", "systemd-run"]
    assert seen == ["boot-1", "boot-2", "boot-2"]  # back only in a new boot past its health gate


def test_builder_upgrade_drains_each_real_server_then_the_standby_then_hands_over(tmp_path, monkeypatch):
    """One bundle per image role, both checked before any node is touched and copied to every
    node at once; the active director is updated last, after its hand-over."""
    from builder import day2, profile, seed
    from builder.remote import Reach
    from tests.conftest import ROOT
    cluster = profile.load(ROOT / "profiles" / "three-web.toml")
    op = day2.Operation(cluster, Reach(Path("kh")), seed.Keys("0" * 64), lambda line: None)
    did: list[str] = []
    monkeypatch.setattr(op, "set_weight", lambda name, weight, timeout: did.append(f"weight {name} {weight}"))
    sent: list[str] = []

    def update(name, b, timeout, copying, verified):
        copying.result()  # its own copy, started before anything else
        assert verified == "1.4"  # checked once per bundle, before any node
        did.append(f"update {name} {b.name}")
        return 60.0
    monkeypatch.setattr(op, "update", update)
    monkeypatch.setattr(op, "_send", lambda node, b, version: sent.append(f"{node.name} {b.name} {version}") or True)
    staged: list[str] = []
    monkeypatch.setattr(op, "_stage", lambda node, sent: sent.result() and staged.append(node.name))
    bad = "director-1.4"

    def verified(b, before):
        if b.name == bad:
            raise day2.Day2Error(f"refused before touching {before}: bad signature")
        return b.name.split("-")[1]
    monkeypatch.setattr(op, "_verified", verified)
    monkeypatch.setattr(op, "hand_over", lambda active, standby: did.append(f"hand over {active.name}"))
    monkeypatch.setattr(day2, "running", lambda c, r: day2.Running(c, frozenset({"lvs-a"})))
    bundles = tmp_path / "bundles"
    (bundles / "director-1.4").mkdir(parents=True)
    with pytest.raises(day2.Day2Error, match="one webserver-VERSION bundle wanted, found none"):
        op.upgrade(bundles)
    (bundles / "webserver-1.4").mkdir()
    (bundles / "webserver-1.3").mkdir()
    with pytest.raises(day2.Day2Error, match="found webserver-1.3, webserver-1.4"):
        op.upgrade(bundles)
    assert did == []
    (bundles / "webserver-1.3").rmdir()
    with pytest.raises(day2.Day2Error, match="refused before touching any node"):
        op.upgrade(bundles)  # the director's bundle is bad: found before the first real server
    assert did == [] and sent == []
    bad = None
    took = op.upgrade(bundles)
    assert sorted(sent) == ["app1 webserver-1.4 1.4", "app2 webserver-1.4 1.4", "app3 webserver-1.4 1.4",
                            "lvs-a director-1.4 1.4", "lvs-b director-1.4 1.4"]
    assert did == ["weight app1 0", "update app1 webserver-1.4", "weight app1 3",
                   "weight app2 0", "update app2 webserver-1.4", "weight app2 2",
                   "weight app3 0", "update app3 webserver-1.4", "weight app3 1",
                   "update lvs-b director-1.4", "hand over lvs-a", "update lvs-a director-1.4"]
    assert list(took) == ["app1", "app2", "app3", "lvs-b", "lvs-a"]
    assert staged == list(took)  # one at a time, in the upgrade's order
    assert contract.IMAGE_OF[profile.REALSERVER] == "webserver"
    assert "hb_standby all" in cluster.failover.hand_over


@pytest.mark.parametrize("stack_profile, first, command, claims", [
    ("dual-stack.toml", "/usr/bin/appliance take-vips",
     "/usr/share/heartbeat/hb_standby all && /usr/bin/appliance release-vips", "all"),
    ("keepalived.toml", None, "echo 1 > /run/keepalived/hand-over", "MASTER")])
def test_a_hand_over_runs_the_stacks_commands_and_waits_until_the_peers_stack_holds_every_vip(
        monkeypatch, stack_profile, first, command, claims):
    """heartbeat (ldirectord on both): the standby takes the VIPs before the active asks to stand
    by and drops them, so no request meets the seconds of resource scripts between; keepalived:
    its hand-over track file puts the active in FAULT (a priority-0 advert) while its checkers
    keep the IPVS table. Done only once the peer's stack claims every VIP and the old active
    holds none."""
    from builder import day2, profile, seed
    from builder.remote import Reach
    from tests.conftest import ROOT
    cluster = profile.load(ROOT / "profiles" / stack_profile)
    op = day2.Operation(cluster, Reach(Path("kh")), seed.Keys("0" * 64), lambda line: None)
    ran, looks = [], []
    active, standby = cluster.directors

    def run(node, reach, c, timeout=30, stdin=None):
        if c == "ipvsadm -L -n -c":  # one connection, synced at once
            return ("IPVS connection entries\npro expire state       source             virtual       destination\n"
                    "TCP 14:59  ESTABLISHED 172.20.40.254:4000 172.20.40.100:80   172.20.40.21:80\n")
        ran.append((node.name, c))
    monkeypatch.setattr(day2.remote, "run", run)
    vips = [str(v) for v in cluster.vips]
    n = len(vips)

    def statuses(c, reach, nodes):
        """Look k: the peer holds k VIPs, its stack claims them from look n + 1, the old active
        lets its last one go at look n + 2."""
        looks.append(tuple(node.name for node in nodes))
        k = len(looks)
        return {standby.name: {"vips": vips[:k], "state": claims if k > n else "none"},
                active.name: {"vips": vips[:1] if k < n + 2 else []}}
    monkeypatch.setattr(day2.remote, "statuses", statuses)
    monkeypatch.setattr(day2.time, "sleep", lambda s: None)
    op.hand_over(active, standby)
    assert ran == ([(standby.name, first)] if first else []) + [(active.name, command)]
    assert cluster.failover.take_first == first and cluster.failover.hand_over == command
    assert len(looks) == n + 2 and set(looks) == {(standby.name, active.name)}


def test_heartbeat_without_ldirectord_on_both_hands_over_with_hb_standby_alone():
    """A standby whose IPVS table is empty until its own ldirectord starts must not take the VIPs first."""
    from builder import profile
    from tests.conftest import ROOT
    cluster = profile.load(ROOT / "profiles" / "howto.toml")
    assert not cluster.heartbeat.ldirectord_on_both
    assert cluster.failover.take_first is None and cluster.failover.hand_over == "/usr/share/heartbeat/hb_standby all"


def test_a_hand_over_waits_until_the_standby_holds_the_actives_connections(monkeypatch):
    """A standby fresh from its update learns a slow download's connection only at its next sync
    message; connections that end meanwhile are not waited for; what never comes is said."""
    from builder import day2, profile, seed
    from builder.remote import Reach
    from tests.conftest import ROOT
    cluster = profile.load(ROOT / "profiles" / "keepalived.toml")
    said: list[str] = []
    op = day2.Operation(cluster, Reach(Path("kh")), seed.Keys("0" * 64), said.append)
    active, standby = cluster.directors

    def table(*clients: int) -> str:
        return "".join(f"TCP 14:59  ESTABLISHED 172.20.40.254:{c} 172.20.40.100:80   172.20.40.21:80\n"
                       for c in clients) + "TCP 01:59  FIN_WAIT    172.20.40.254:9 172.20.40.100:80   172.20.40.21:80\n"
    # the active: 1, 2, 3 established; 3 ends; 4 begins after the first look. The standby learns 1, then 2.
    tables = {active.name: iter([table(1, 2, 3), table(1, 2, 4), table(1, 2, 4), table(1, 2, 4)]),
              standby.name: iter([table(1), table(1, 2)])}
    monkeypatch.setattr(day2.remote, "run", lambda node, reach, c, timeout=30, stdin=None: next(tables[node.name]))
    monkeypatch.setattr(day2.time, "sleep", lambda s: None)
    assert op.wait_synced(active, standby) == set()
    assert "holds lvs-a's 3 established connections" in said[-1]
    # a connection the standby never learns: waited for until the limit, then named
    tables = {active.name: iter(lambda: table(1, 2), None), standby.name: iter(lambda: table(1), None)}
    clock = iter(range(0, 1000, 50))
    monkeypatch.setattr(day2.time, "monotonic", lambda: next(clock))
    missing = op.wait_synced(active, standby, timeout=120)
    assert missing == {("172.20.40.254:2", "172.20.40.100:80", "172.20.40.21:80")}
    assert "still lacks 1 of lvs-a's 2 established connections" in said[-1]


def test_an_upgrade_prepares_a_node_by_copying_then_staging_at_the_lowest_priority(monkeypatch):
    import concurrent.futures
    import json

    from builder import day2, profile, seed
    from builder.remote import Reach
    from tests.conftest import ROOT
    cluster = profile.load(ROOT / "profiles" / "three-web.toml")
    did: list[str] = []
    runs = {"v": "1.3"}

    def run(node, reach, command, timeout=30, stdin=None):
        if command.endswith(" config"):
            return json.dumps({"version": runs["v"]})
        did.append(command)
        return "1.4 staged in /dev/vda4: nothing boots it until `appliance update` arms it\n"
    monkeypatch.setattr(day2.remote, "run", run)
    monkeypatch.setattr(day2.remote, "send", lambda node, reach, local, there: did.append(f"send {there}"))
    said: list[str] = []
    op = day2.Operation(cluster, Reach(Path("kh")), seed.Keys("0" * 64), said.append)

    def copied(value: bool) -> concurrent.futures.Future:
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(value)
        return done
    assert op._send(cluster.node("app1"), Path("webserver-1.4"), "1.4") is True
    op._stage(cluster.node("app1"), copied(True))
    assert did == [f"send {contract.UPDATE_INCOMING}",
                   f"systemd-run --quiet --scope {contract.UPDATE_STAGE_LIMITS} "
                   f"nice -n 19 {contract.APPLIANCE_CLI} update {contract.UPDATE_INCOMING} --stage"]
    assert said[-1].endswith("app1: 1.4 staged in /dev/vda4: nothing boots it until `appliance update` arms it")
    did.clear()
    runs["v"] = "1.4"  # runs it already: nothing copied, nothing staged
    assert op._send(cluster.node("app1"), Path("webserver-1.4"), "1.4") is False
    op._stage(cluster.node("app1"), copied(False))
    assert did == []
