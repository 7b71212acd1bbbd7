"""One appliance machine under QEMU, driven like the NixOS test driver's Machine.

    loadb1.succeed("ipvsadm -L -n")          # a guest command that must exit 0
    webserver1.systemctl("stop apache2")     # services by name
    loadb1.crash()                           # power loss; loadb1.start() boots it again
    loadb2.pause(); loadb2.resume()          # a hang: the CPUs stop, nothing on the wire
    loadb2.block(); loadb2.unblock()         # pull / plug the network cable(s)

Every guest command is logged with its exit code and duration. A machine's state lives in its
directory (QMP, guest-agent and console sockets, pid file, console log), and nothing is held
open between calls, so another process -- ``python -m lab ...`` beside a running
``up`` -- drives the same machine by name. Nothing here uses QEMU user-mode networking: a NIC
gets a tap in the lab's network namespace, or sits on a hub with nothing else plugged in (a
cable to a switch that drops every frame).
"""
from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from builder import contract
from builder.errors import LabError
from builder.run import run
from lab import wait
from lab.agent import GuestAgent, GuestAgentError

log = logging.getLogger("lab.machine")
# qemu.qmp logs a refused connection (a crashed machine) as an error of its own; QemuError and
# GuestAgentError already say it, once, where it matters
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
READY_RE = re.compile(contract.READY_PATTERN)
PROBLEM_RE = re.compile(contract.PROBLEM_PATTERN)
# how often a wait for the ready line also reads it from the journal (see wait_until_ready)
READY_JOURNAL_EVERY = 30.0
KERNEL_PANIC = "Kernel panic - not syncing"
# A TCG wedge (2026-12-03): one vCPU's timers stop in early boot and the kernel prints the same
# RCU stall report every ~21 s, forever, and nothing else. A guest that is only starved still
# prints something between its reports (or reports ticks): see boot_wedge().
RCU_TIMER_STALL = "rcu_preempt kthread timer wakeup didn't happen"
WEDGE_REPORTS = 3
# what the stall detector prints: its reports and the stack dumps beneath them
STALL_LINE_RE = re.compile(r"\brcu|Call Trace|</?TASK>|\+0x[0-9a-f]+/0x[0-9a-f]+"
                           r"|^\s*(\[[ 0-9.]+\]\s*)?R[A-Z0-9]{1,3}: ", re.I)


def boot_wedge(text: str) -> str | None:
    """Why this boot will never finish though QEMU runs, or None: a kernel panic, or the TCG
    timer wedge: WEDGE_REPORTS stall reports of RCU_TIMER_STALL with nothing between them but
    the stall detector's own lines (a guest that recovers, or is only slow, prints more)."""
    if KERNEL_PANIC in text:
        return text[text.index(KERNEL_PANIC):].split("\n", 1)[0]
    reports = [m.start() for m in re.finditer(re.escape(RCU_TIMER_STALL), text)]
    if len(reports) < WEDGE_REPORTS:
        return None
    since = text[text.rfind("\n", 0, reports[-WEDGE_REPORTS]) + 1:]
    if all(STALL_LINE_RE.search(line) or not line.strip() for line in since.splitlines()):
        return f"{len(reports)} RCU stall reports and nothing else: {RCU_TIMER_STALL}"
    return None


class CommandFailed(LabError, AssertionError):
    """A guest command exited otherwise than asked. Inside a wait it is retried: the state it
    checks may still come (the ready line's problems are BootFailed instead)."""


class BootFailed(CommandFailed, wait.Abort):
    """The boot went wrong in a way waiting longer will not fix (the console's problem line)."""


class NoSuchNic(LabError, IndexError):
    """A NIC number the machine does not have."""


class QemuError(LabError, RuntimeError):
    """QEMU would not start, or its monitor refused a command; the message says which and why."""


@dataclass(frozen=True)
class Nic:
    """One network card: a tap on the lab's bridge (None: a hub that drops every frame), its MAC and model."""
    tap: str | None = None
    mac: str | None = None
    model: str = "virtio-net-pci"


# How QEMU attaches a disk on each bus: the devices of a real server or hypervisor. `usb` and
# the SATA buses hang off q35's own AHCI (ide.N) and a qemu-xhci controller.
BUSES = {
    "virtio": "virtio-blk-pci,drive={id}",
    "scsi": "scsi-hd,drive={id},bus=scsi0.0",          # virtio-scsi, as on Proxmox's default
    "sata": "ide-hd,drive={id},bus=ide.{port}",
    "sata-cd": "ide-cd,drive={id},bus=ide.{port}",
    "nvme": "nvme,drive={id},serial={id}",
    "usb": "usb-storage,drive={id},bus=xhci.0",
    "sas": "scsi-hd,drive={id},bus=sas0.0",             # LSI SAS1068 (VMware's "LSI Logic SAS")
}


@dataclass(frozen=True)
class Hardware:
    """The machine around the image: firmware, where the root disk and the seed sit, its size."""
    firmware: str = "uefi"        # uefi (OVMF) | bios (SeaBIOS)
    disk_bus: str = "virtio"
    seed_bus: str = "virtio"
    disk_size: str | None = "4G"  # None: the image's own size, no room to grow into
    cpus: int = 2                 # a small server's; under TCG a lone boot takes ~2/3 of one vCPU's
                                  # time (multi-threaded TCG), a boot of four at once ~5 % more

    def __post_init__(self):
        assert self.firmware in ("uefi", "bios"), self.firmware
        assert self.disk_bus in BUSES and self.seed_bus in BUSES, (self.disk_bus, self.seed_bus)

    def storage(self, disk: Path, seed: Path | None) -> list[str]:
        argv, buses = [], {self.disk_bus} | ({self.seed_bus} if seed else set())
        if "usb" in buses:
            argv += ["-device", "qemu-xhci,id=xhci"]
        if "scsi" in buses:
            argv += ["-device", "virtio-scsi-pci,id=scsi0"]
        if "sas" in buses:
            argv += ["-device", "mptsas1068,id=sas0"]
        drives = [("disk0", disk, self.disk_bus, "qcow2", ",cache=unsafe")]
        if seed:
            drives.append(("seed0", seed, self.seed_bus, "raw", ",readonly=on"))
        for port, (id_, path, bus, fmt, extra) in enumerate(drives):
            media = ",media=cdrom" if bus == "sata-cd" else ""
            argv += ["-drive", f"file={path},if=none,id={id_},format={fmt}{extra}{media}",
                     "-device", BUSES[bus].format(id=id_, port=port) + (",bootindex=0" if port == 0 else "")]
        return argv


class Machine:
    def __init__(self, name: str, image: Path, workdir: Path, *, seed: Path | None = None,
                 accel: str = "tcg", memory: int = 384, nics: tuple[Nic, ...] = (Nic(),),
                 netns: str | None = None, hardware: Hardware = Hardware(), existing: bool = False):
        """existing: the machine's directory belongs to a running lab (`up`) and is driven
        from here; otherwise the first start() makes it anew, whatever an earlier run left."""
        self.name, self.image, self.seed, self.accel = name, image, seed, accel
        self.memory, self.nics, self.netns, self.hardware = memory, nics, netns, hardware
        self.created = existing
        self.dir = workdir / name
        self.console_log = self.dir / "console.log"
        self.agent = GuestAgent(str(self.dir / "qga.sock"))
        self._console_from = 0  # console offset: waits look at what came after the last boot
        self.started_at = 0.0

    # ---- life cycle -------------------------------------------------------------------
    def command(self) -> list[str]:
        d = self.dir
        argv = [
            "qemu-system-x86_64", "-name", self.name, "-nodefaults", "-no-user-config",
            "-display", "none", "-machine", f"q35,accel={self.accel}", "-m", str(self.memory),
            "-smp", str(self.hardware.cpus), "-pidfile", str(d / "qemu.pid"),
        ]
        if self.hardware.firmware == "uefi":  # without pflash QEMU boots SeaBIOS
            argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,file={d / 'efivars.fd'}"]
        argv += self.hardware.storage(d / "disk.qcow2", self.seed)
        for i, nic in enumerate(self.nics):
            if nic.tap:
                argv += ["-netdev", f"tap,id=n{i},ifname={nic.tap},script=no,downscript=no"]
            else:
                # a hub's second port with no peer takes every frame and drops it; alone on its
                # hub the NIC could never send (the guest logged "transmit queue 0 timed out")
                argv += ["-netdev", f"hubport,id=n{i},hubid={i}", "-netdev", f"hubport,id=n{i}sink,hubid={i}"]
            argv += ["-device", f"{nic.model},netdev=n{i}" + (f",mac={nic.mac}" if nic.mac else "")]
        argv += [
            # the console: a socket `lab console` attaches to, everything also logged to a file
            "-chardev", f"socket,id=ser0,path={d / 'console.sock'},server=on,wait=off,"
                        f"logfile={self.console_log},logappend=on",
            "-serial", "chardev:ser0",
            "-chardev", f"socket,id=qga0,path={d / 'qga.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off",
            "-device", "virtio-rng-pci",
            # an empty PCIe slot (q35's root bus takes no hot-plug): attach_medium plugs a disk in
            "-device", "pcie-root-port,id=media,chassis=1",
        ]
        if self.accel == "kvm":
            argv += ["-cpu", "host"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        return argv

    def create(self) -> None:
        """A fresh machine: a copy-on-write disk over the image (never modified), fresh UEFI
        variables, an empty console log."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        size = [self.hardware.disk_size] if self.hardware.disk_size else []
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", self.image.resolve(),
             self.dir / "disk.qcow2", *size])
        shutil.copy(OVMF_VARS, self.dir / "efivars.fd")
        self.console_log.touch()
        self.created = True

    def start(self) -> None:
        """Power on: boot from the machine's disk (created on the first start)."""
        if not self.created:
            self.create()
        if self.is_running():
            raise QemuError(f"{self.name} is already running (pid {self.pid()})")
        for stale in ("qmp.sock", "qga.sock", "console.sock", "qemu.pid"):
            (self.dir / stale).unlink(missing_ok=True)
        self._console_from = self.console_log.stat().st_size
        argv = self.command()
        log.info("%s: %s", self.name, " ".join(argv))
        with open(self.dir / "qemu.log", "w") as out:
            # A session of its own: with the kernel's autogroup scheduling (sched_autogroup_enabled=1
            # on this project's hosts) each VM is a group with an equal share. Directors at nice
            # -10 in the caller's session starved a real server into a boot panic ("IO-APIC +
            # timer doesn't work!", 2026-12-01): every VM gets the same priority.
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()

        def up() -> bool:
            if proc.poll() is not None:
                raise wait.Abort(f"{self.name}: QEMU exited ({proc.returncode}): "
                                 f"{(self.dir / 'qemu.log').read_text().strip()}")
            return (self.dir / "qmp.sock").exists() and (self.dir / "qemu.pid").exists()
        try:
            wait.until(up, 30, f"{self.name}: QEMU to open its QMP socket")
        except (wait.Abort, wait.Timeout) as e:
            raise QemuError(str(e)) from None

    def pid(self) -> int | None:
        try:
            return int((self.dir / "qemu.pid").read_text())
        except (OSError, ValueError):
            return None

    def is_running(self, proc: Path = Path("/proc")) -> bool:
        """QEMU's process still exists. A killed QEMU nobody has reaped yet is a zombie, but its
        leader turns zombie while its other threads are still exiting and holding the disk's
        lock: a start() then failed with 'Failed to get "write" lock' (CI, step 15's power
        cycle). Only a zombie without other threads is gone."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            status = dict(line.split(":\t", 1) for line in (proc / str(pid) / "status").read_text().splitlines()
                          if ":\t" in line)
        except OSError:
            return False
        return not (status.get("State", "").startswith("Z") and status.get("Threads", "1").strip() == "1")

    def monitor(self, command: str, **args) -> object:
        """One QMP command on a short connection of its own."""
        qmp = QEMUMonitorProtocol(str(self.dir / "qmp.sock"))
        try:
            qmp.connect()
            qmp.settimeout(wait.scaled(10))
            return qmp.cmd(command, **args)
        except (QMPError, OSError, TimeoutError) as e:
            raise QemuError(f"{self.name}: QMP {command}: {type(e).__name__}: {e}") from None
        finally:
            with contextlib.suppress(QMPError, OSError, EOFError):  # after quit the line is gone
                qmp.close()

    def attach_medium(self, path: Path) -> None:
        """Plug a read-only disk image in, as an operator inserts a stick with an update on it."""
        self.monitor("blockdev-add", driver="raw", **{"node-name": "medium", "read-only": True},
                     file={"driver": "file", "filename": str(path), "read-only": True})
        self.monitor("device_add", driver="virtio-blk-pci", drive="medium", id="medium0", bus="media")

    def reboot(self) -> None:
        """A clean reboot from inside (in a second, so that the agent's command returns first);
        waits on the console look at the next boot only."""
        self._console_from = self.console_log.stat().st_size
        log.info("%s: reboot", self.name)
        self.succeed("systemd-run --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot")

    def crash(self) -> None:
        """Power loss: QEMU is killed, no shutdown, no goodbye on the network. The disk keeps
        what was written; start() boots it again."""
        pid = self.pid()
        log.info("%s: crash (power loss)", self.name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # gone since the check
                os.kill(pid, signal.SIGKILL)
            wait.until(lambda: not self.is_running(), 10, f"{self.name}: QEMU to die")

    def pause(self) -> None:
        """A hang: the CPUs stop at once; to the network this is a power loss. resume() lets
        it run on from the instruction where it stopped (see Cluster.revive)."""
        log.info("%s: pause", self.name)
        self.monitor("stop")

    def resume(self) -> None:
        log.info("%s: resume", self.name)
        self.monitor("cont")

    def stall(self, seconds: float) -> None:
        """An overloaded host: QEMU's threads get no CPU for `seconds`, then run on. Unlike
        pause() (QMP stop halts the guest's clock too), the guest's clock runs on meanwhile, so
        on waking every timer it set has expired at once, as under a loaded TCG host."""
        pid = self.pid()
        if pid is None:
            raise QemuError(f"{self.name}: QEMU is not running: nothing to stall")
        log.info("%s: stall for %.1f s", self.name, seconds)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def block(self, nic: int | None = None) -> None:
        """Pull the network cable of NIC `nic` (default: every NIC)."""
        self._set_links(nic, False)

    def unblock(self, nic: int | None = None) -> None:
        """Plug the cable back in."""
        self._set_links(nic, True)

    def drop(self, nic: int) -> None:
        """Lose every frame of NIC `nic` at its switch port, while the NIC keeps its carrier:
        a switch or a cable fault further along, which a pulled cable (block) is not: the
        guest sees nothing wrong, its peer simply goes quiet."""
        self._set_port(nic, "disabled")

    def undrop(self, nic: int) -> None:
        self._set_port(nic, "forwarding")

    def _set_port(self, nic: int, state: str) -> None:
        tap = self.nics[nic].tap if 0 <= nic < len(self.nics) else None
        if tap is None or self.netns is None:
            raise NoSuchNic(f"{self.name} has no NIC {nic} on the lab's switch")
        log.info("%s: switch port of NIC %d %s", self.name, nic, state)
        run(["ip", "netns", "exec", self.netns, "bridge", "link", "set", "dev", tap,
             "state", {"disabled": "0", "forwarding": "3"}[state]])

    def _set_links(self, nic: int | None, up: bool) -> None:
        for i in range(len(self.nics)) if nic is None else (nic,):
            if not 0 <= i < len(self.nics):
                raise NoSuchNic(f"{self.name} has {len(self.nics)} NIC(s); no NIC {i}")
            log.info("%s: cable %d %s", self.name, i, "plugged in" if up else "pulled")
            self.monitor("set_link", name=f"n{i}", up=up)

    def shutdown(self) -> None:
        """Stop QEMU for good (quit, then kill), leaving the logs: the lab's teardown."""
        if not self.is_running():
            return
        with contextlib.suppress(ProcessLookupError):  # gone since the check
            try:
                self.monitor("quit")
            except QemuError:
                pass
            try:
                wait.until(lambda: not self.is_running(), 5, f"{self.name}: QEMU to quit")
            except wait.Timeout:
                os.killpg(os.getpgid(self.pid() or 0), signal.SIGKILL)

    # ---- console ----------------------------------------------------------------------
    def console(self) -> str:
        """What the serial console printed since the last start()."""
        return self.console_log.read_text(errors="replace")[self._console_from:]

    def wait_for_console(self, pattern: str | re.Pattern, timeout: float) -> re.Match:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def seen():
            self._abort_if_dead()
            return regex.search(self.console())
        return wait.until(seen, timeout, f"{self.name}: console line /{regex.pattern}/")

    def wait_until_ready(self, timeout: float) -> re.Match:
        """The first-boot ready line; fails early on the documented error lines. Read from the
        console, and every READY_JOURNAL_EVERY s from the journal through the guest agent: once
        the console lost the line (appliance-ready printed it 6 s after agetty started on ttyS0;
        the journal had it, the serial log never did) and a bench waited its 600 s in vain."""
        asked, panicked = [time.monotonic()], list[str]()

        def seen():
            text = self.console()
            problem = PROBLEM_RE.search(text)
            if problem:
                raise BootFailed(f"{self.name}: {problem.group(0)}")
            found = READY_RE.search(text)
            wedge = None if found else boot_wedge(text)
            if wedge:
                # under TCG the guest kernel has died in early boot for QEMU's reasons, not the
                # image's (2026-12-01: "Oops: int3" in a text patch, a lone boot; 2026-12-03: a
                # vCPU's timers stopped): one power cycle tells a flake from a broken image,
                # whose second boot dies too
                if panicked:
                    raise BootFailed(f"{self.name}: the kernel died at boot twice ({panicked[0]}, then "
                                     f"{wedge}); see {self.console_log}")
                panicked.append(wedge)
                log.warning("%s: %s; power-cycling it once", self.name, wedge)
                self.crash()
                self.start()
                return None
            self._abort_if_dead()
            if found or time.monotonic() - asked[0] < READY_JOURNAL_EVERY:
                return found
            asked[0] = time.monotonic()
            return self._ready_in_journal()
        try:
            return wait.until(seen, timeout, f"{self.name}: the ready line", interval=1)
        except wait.Timeout as e:
            raise BootFailed(f"{e}; the console's last line: {self.last_console_line()!r}") from None

    def last_console_line(self) -> str:
        """The console's last line with text, its escape sequences dropped: where a boot got to."""
        lines = (re.sub(r"\x1b\[[0-9;?:=!]*[A-Za-z]", "", line).strip() for line in self.console().splitlines())
        return next((line for line in reversed(list(lines)) if line), "")

    def _ready_in_journal(self) -> re.Match | None:
        """appliance-ready's line from this boot's journal, if the guest agent answers yet."""
        try:
            if not self.agent.ping():
                return None
            _, out = self.agent.exec(f"journalctl -b -o cat --no-pager -u {contract.READY_UNIT}", 20)
        except GuestAgentError:
            return None
        problem = PROBLEM_RE.search(out)
        if problem:
            raise BootFailed(f"{self.name}: {problem.group(0)} (from the journal)")
        found = READY_RE.search(out)
        if found:
            log.warning("%s: the ready line is in the journal but not on the console", self.name)
        return found

    def _abort_if_dead(self) -> None:
        if not self.is_running():
            raise wait.Abort(f"{self.name}: QEMU is not running; see {self.dir / 'qemu.log'}")

    # ---- commands in the guest ------------------------------------------------------
    def execute(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run `sh -c command` in the guest: (exit code, output). Logged with its duration."""
        started = time.monotonic()
        try:
            code, out = self.agent.exec(command, timeout)
        except GuestAgentError as e:
            log.info("%s: $ %s -> no answer after %.2fs (%s)", self.name, command,
                     time.monotonic() - started, e)
            raise
        log.info("%s: $ %s -> %d in %.2fs", self.name, command, code, time.monotonic() - started)
        return code, out

    def succeed(self, command: str, timeout: float = 60) -> str:
        code, out = self.execute(command, timeout)
        if code != 0:
            raise CommandFailed(f"{self.name}: `{command}` exited {code}:\n{out}")
        return out

    def fail(self, command: str, timeout: float = 60) -> str:
        code, out = self.execute(command, timeout)
        if code == 0:
            raise CommandFailed(f"{self.name}: `{command}` succeeded but should fail:\n{out}")
        return out

    def put_files(self, files: dict[str, tuple[str, int]], root: str) -> None:
        """Write files (path -> (text, mode)) under `root` in the guest, in one command: a
        gzipped tar in base64 (small trees: rendered configs)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for path, (text, mode) in files.items():
                data = text.encode()
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
        b64 = base64.b64encode(buf.getvalue()).decode()
        self.succeed(f"mkdir -p {shlex.quote(root)} && echo {b64} | base64 -d | tar -xz -C {shlex.quote(root)}")

    def wait_until_succeeds(self, command: str, timeout: float = 60) -> str:
        """Run `command` until it succeeds, within `timeout` s in all. An attempt may use what is
        left of it: a slow command is slow every time (`ldirectord ldirectord.cf status` compiles
        ldirectord, LWP and IO::Socket::SSL first: over 30 s on a loaded TCG host, so attempts
        cut at a quarter of 120 s never saw it answer: the rehearsal of 0261314)."""
        result: dict[str, str] = {}
        deadline = time.monotonic() + wait.scaled(timeout)

        def attempt() -> bool:
            try:
                code, out = self.execute(command, timeout=max(5.0, (deadline - time.monotonic()) / wait.SCALE))
            except GuestAgentError:
                return False
            result["out"] = out
            return code == 0
        wait.until(attempt, timeout, f"{self.name}: `{command}` to succeed")
        return result["out"]

    def wait_for_agent(self, timeout: float) -> None:
        wait.until(self.agent.ping, timeout, f"{self.name}: the guest agent")

    def wait_for_unit(self, unit: str, timeout: float = 60) -> None:
        self.wait_until_succeeds(f"systemctl is-active --quiet {unit}", timeout)

    def systemctl(self, args: str, timeout: float = 60) -> str:
        """`systemctl ARGS` in the guest, which must succeed: systemctl("stop apache2")."""
        return self.succeed(f"systemctl {args}", timeout)
