"""Updates in place (issue 25), on one UEFI director with room for the A/B layout: a tampered
bundle is refused and changes nothing; v1 -> v2 from a signed bundle on an attached medium keeps
the node what it was; a v3 whose health gate fails is booted three times on trial and left, and
v2 boots again by itself. The steps run in this order on one VM."""
from __future__ import annotations

import time

import pytest

from builder import bundle, contract, profile, seed
from builder import image as image_mod
from firstboot import update as node_update
from lab import bundles
from lab.cluster import Cluster
from lab.machine import Machine
from lab.paths import ROOT, image, results

pytestmark = pytest.mark.vm
PROFILE = ROOT / "profiles" / "howto.toml"
NODE = "loadb1"
MEDIUM = "/run/update-medium"
# three trial boots of a broken version (each to its failed gate, then a reboot), then the good
# one: ~7 min for one lone TCG VM (docs/benchmarks.md, session 31)
ROLLBACK_TIMEOUT = 3 * contract.BOOT_TIMEOUT
# what a node is, read in one command: what an update must not change
IDENTITY = ("uname -n; cat /etc/machine-id; sha256sum /etc/ha.d/authkeys; "
            f"ssh-keygen -lf {contract.SSH_HOST_KEY}.pub; ip -4 -o addr show dev eth0 | grep -v secondary")


@pytest.fixture(scope="module")
def updates(tmp_path_factory) -> dict:
    """The seed (with the lab's operator key, so the node has an SSH host key to keep), v1's
    bundle of the built image and its variants, each signed by the seed's update key, on one
    medium: v2 (good), v3 (a failing health gate) and a tampered copy of v2."""
    out = tmp_path_factory.mktemp("updates")
    cluster = Cluster.with_operator(profile.load(PROFILE), out)
    keys = seed.Keys.gather(cluster, PROFILE, out / "secrets")
    seed.write_seeds(cluster, keys, out, [NODE])
    key = bundle.signing_key(out / "secrets")
    img = image("director")
    v1 = bundle.write("director", img, image_mod.partitions(img)["root"], image_mod.output_dir("director"),
                      out / "v1", key, level=3)
    made = out / "medium"
    v2 = bundles.variant(v1, made, "v2-test", key)
    bundles.variant(v1, made, "v3-broken", key, broken=True)
    tampered = made / "tampered"
    tampered.mkdir()
    for f in v2.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    with open(tampered / "initrd", "r+b") as initrd:  # one byte: the signature still holds
        initrd.seek(4096)
        byte = initrd.read(1)
        initrd.seek(4096)
        initrd.write(bytes([byte[0] ^ 0xFF]))
    bundles.medium(made, out / "medium.img")
    return {"seed": out / f"{NODE}.iso", "medium": out / "medium.img", "v1": (v1 / bundle.VERSION).read_text().strip()}


@pytest.fixture(scope="module")
def node(updates, accel):
    vm = Machine(NODE, image("director"), results("update"), accel=accel, seed=updates["seed"])
    try:
        vm.start()
        vm.wait_until_ready(contract.BOOT_TIMEOUT)
        vm.wait_for_agent(60)
        vm.attach_medium(updates["medium"])
        mount_medium(vm)
        yield vm
    finally:
        vm.shutdown()


def mount_medium(vm: Machine) -> None:
    """The stick at MEDIUM (again after a reboot: /run is new every boot)."""
    vm.wait_until_succeeds(f"mkdir -p {MEDIUM} && (mountpoint -q {MEDIUM} || mount -o ro LABEL=update {MEDIUM})", 60)


@pytest.fixture(scope="module")
def identity(node) -> str:
    """What the node was before any update."""
    return node.succeed(IDENTITY)


def version(vm: Machine) -> str:
    return vm.succeed(". /usr/lib/os-release; echo $IMAGE_VERSION").strip()


def slots(vm: Machine) -> list[str]:
    """The root slots' GPT names, in disk order."""
    return [line.split()[1] for line in vm.succeed("lsblk -nrpo PATH,PARTLABEL,PARTTYPE").splitlines()
            if line.lower().endswith(contract.GPT_ROOT) and len(line.split()) == 3]


def entries(vm: Machine) -> list[str]:
    """The boot entries on XBOOTLDR (`appliance-VERSION[+LEFT[-DONE]].conf`), read from the
    partition (mounted a second time: /boot has it once systemd found it at boot, not before)."""
    return vm.succeed("d=/run/boot-check; mkdir -p $d && mount PARTLABEL=appliance-boot $d && "
                      "ls $d/loader/entries; umount $d").split()


def update(vm: Machine, name: str) -> str:
    """`appliance update` from the medium, then a reboot into what it installed; what it said."""
    mount_medium(vm)
    said = vm.succeed(f"appliance update --no-reboot {MEDIUM}/{name}", timeout=600)
    vm.reboot()
    return said


def test_1_a_tampered_bundle_is_refused_and_changes_nothing(node, updates, identity):
    before = slots(node), entries(node)
    out = node.fail(f"appliance update --no-reboot {MEDIUM}/tampered 2>&1", timeout=600)
    assert "refused, nothing changed" in out and "initrd" in out and "checksum" in out, out
    assert (slots(node), entries(node)) == before
    assert slots(node)[1:] == [node_update.EMPTY], slots(node)
    assert version(node) == updates["v1"]


def test_2_v1_to_v2_keeps_the_node_what_it_was(node, identity):
    """Staged first, as `builder upgrade` does on every node at once: the slot written and named,
    booted by nothing; the update then finds it staged and only writes the entries."""
    before = entries(node)
    mount_medium(node)
    started = time.monotonic()
    node.succeed(f"appliance update --stage {MEDIUM}/director-v2-test", timeout=600)
    staged = time.monotonic() - started
    assert "root-v2-test" in slots(node) and entries(node) == before
    started = time.monotonic()
    said = update(node, "director-v2-test")
    print(f"\nv2 staged in {staged:.0f} s, armed in {time.monotonic() - started:.0f} s")
    assert "v2-test was staged" in said and "writing" not in said, said
    node.wait_until_ready(contract.BOOT_TIMEOUT)
    node.wait_for_agent(60)
    print(f"\nv2 READY {time.monotonic() - started:.0f} s after `appliance update`")
    assert version(node) == "v2-test"
    assert node.succeed(IDENTITY) == identity
    assert "root-v2-test" in slots(node)
    # boot assessment passed: systemd-bless-boot took the counter off v2's entry
    node.wait_until_succeeds("systemctl is-active --quiet systemd-bless-boot.service", 120)
    assert node_update.entry_name("v2-test", None) in entries(node), entries(node)


def test_3_a_broken_v3_is_left_and_v2_boots_again_by_itself(node, identity):
    started = time.monotonic()
    update(node, "director-v3-broken")
    node.wait_until_ready(ROLLBACK_TIMEOUT)
    node.wait_for_agent(60)
    print(f"\nback on v2, READY {time.monotonic() - started:.0f} s after `appliance update` of v3")
    assert version(node) == "v2-test"
    assert node.succeed(IDENTITY) == identity
    # systemd-boot counted v3's tries down to none: `+0-3` (0 left, 3 done)
    assert f"{node_update.ENTRY_PREFIX}v3-broken+0-{node_update.TRIES}.conf" in entries(node), entries(node)
    assert node_update.entry_name("v2-test", None) in entries(node)
    # v1, v2, three trials of v3, v2 again: the journal of every boot is on the state partition
    boots = node.succeed("journalctl --list-boots --no-pager | grep -cE '[0-9a-f]{32}'")
    assert int(boots) >= 6, boots
