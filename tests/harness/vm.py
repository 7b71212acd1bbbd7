"""One appliance VM under QEMU: copy-on-write disk, seed ISO, serial log, QMP and guest agent.

Tests read like the howto: ``loadb1.succeed("ipvsadm -L -n")``, ``webserver1.stop("apache2")``,
``loadb1.crash()``. Nothing here uses QEMU user-mode networking: a VM gets a tap device in
the test's network namespace, or a NIC on an empty hub.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from builder.run import run
from harness import wait
from harness.qga import GuestAgent, GuestAgentError

log = logging.getLogger("harness.vm")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
READY_RE = re.compile(r"APPLIANCE READY node=(\S+) role=(\S+) address=(\S+) instance=(\S+)")
PROBLEM_RE = re.compile(r"APPLIANCE (NOT CONFIGURED|FAILED).*")


class CommandFailed(wait.Abort):
    """A guest command, or the boot, went wrong in a way waiting longer will not fix."""


class VM:
    def __init__(self, name: str, image: Path, workdir: Path, *, seed: Path | None = None,
                 accel: str = "tcg", memory: int = 384, tap: str | None = None,
                 mac: str | None = None, netns: str | None = None):
        self.name, self.image, self.seed, self.accel = name, image, seed, accel
        self.memory, self.tap, self.mac, self.netns = memory, tap, mac, netns
        self.dir = workdir / name
        self.console_log = self.dir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.qmp: QEMUMonitorProtocol | None = None
        self.agent = GuestAgent(str(self.dir / "qga.sock"))
        self._console_from = 0  # console offset: waits look at what came after the last boot
        self.started_at = 0.0

    # ---- life cycle -------------------------------------------------------------------
    def command(self) -> list[str]:
        d = self.dir
        net = (["-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no"] if self.tap
               else ["-netdev", "hubport,id=n0,hubid=0"])
        mac = f",mac={self.mac}" if self.mac else ""
        argv = [
            "qemu-system-x86_64", "-name", self.name, "-nodefaults", "-no-user-config",
            "-display", "none", "-machine", f"q35,accel={self.accel}", "-m", str(self.memory),
            "-smp", "1",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={d / 'efivars.fd'}",
            "-drive", f"file={d / 'disk.qcow2'},if=virtio,format=qcow2,cache=unsafe",
            *net, "-device", f"virtio-net-pci,netdev=n0{mac}",
            "-chardev", f"file,id=ser0,path={self.console_log}", "-serial", "chardev:ser0",
            "-chardev", f"socket,id=qga0,path={d / 'qga.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off",
            "-device", "virtio-rng-pci",
        ]
        if self.seed:
            argv += ["-drive", f"file={self.seed},if=virtio,format=raw,readonly=on"]
        if self.accel == "kvm":
            argv += ["-cpu", "host"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        return argv

    def start(self) -> None:
        """Fresh overlay over the image (never modified), fresh UEFI variables, boot."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", self.image.resolve(),
             self.dir / "disk.qcow2", "4G"])
        shutil.copy(OVMF_VARS, self.dir / "efivars.fd")
        self.console_log.touch()
        argv = self.command()
        log.info("%s: %s", self.name, " ".join(argv))
        with open(self.dir / "qemu.log", "w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.started_at = time.monotonic()
        wait.until(lambda: (self.dir / "qmp.sock").exists() or self._died(), 30,
                   f"{self.name}: QEMU to open its QMP socket")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name}: QEMU exited: {(self.dir / 'qemu.log').read_text()}")
        self.qmp = QEMUMonitorProtocol(str(self.dir / "qmp.sock"))
        self.qmp.connect()

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def monitor(self, command: str, **args) -> object:
        assert self.qmp, f"{self.name} is not running"
        reply = self.qmp.cmd_raw(command, args or None)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: QMP {command}: {reply['error']}")
        return reply.get("return")

    def crash(self) -> None:
        """Hard stop: the CPUs halt at once, no shutdown, no goodbye on the network."""
        self.monitor("stop")
        self.agent.close()

    def resume(self) -> None:
        """Let a crashed VM run on from the instruction where it stopped."""
        self.monitor("cont")

    def power_on(self) -> None:
        """Power a crashed VM back on: reset and run; it boots again from its disk."""
        self._console_from = self.console_log.stat().st_size
        self.monitor("system_reset")
        self.monitor("cont")
        self.started_at = time.monotonic()

    def set_link(self, up: bool) -> None:
        """Cut or restore the VM's network cable."""
        self.monitor("set_link", name="n0", up=up)

    def shutdown(self) -> None:
        """Stop QEMU for good (quit, then kill), leaving the logs."""
        self.agent.close()
        if self.proc and self.proc.poll() is None:
            try:
                if self.qmp:
                    self.qmp.cmd("quit")
            except Exception:  # noqa: BLE001 - the process is killed below anyway
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.qmp:
            try:
                self.qmp.close()
            except Exception:  # noqa: BLE001
                pass
            self.qmp = None

    # ---- console ----------------------------------------------------------------------
    def console(self) -> str:
        return self.console_log.read_text(errors="replace")[self._console_from:]

    def wait_for_console(self, pattern: str | re.Pattern, timeout: float) -> re.Match:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def seen():
            if self._died():
                raise wait.Abort(f"{self.name}: QEMU exited; see {self.dir / 'qemu.log'}")
            return regex.search(self.console())
        return wait.until(seen, timeout, f"{self.name}: console line /{regex.pattern}/")

    def wait_until_ready(self, timeout: float) -> re.Match:
        """The first-boot ready line; fails early on the documented error lines."""
        def seen():
            text = self.console()
            problem = PROBLEM_RE.search(text)
            if problem:
                raise CommandFailed(f"{self.name}: {problem.group(0)}")
            if self._died():
                raise wait.Abort(f"{self.name}: QEMU exited; see {self.dir / 'qemu.log'}")
            return READY_RE.search(text)
        try:
            return wait.until(seen, timeout, f"{self.name}: the ready line", interval=1)
        except wait.Timeout as e:
            raise CommandFailed(str(e)) from None

    # ---- commands in the guest ------------------------------------------------------
    def execute(self, command: str, timeout: float = 60) -> tuple[int, str]:
        return self.agent.exec(command, timeout)

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

    def wait_until_succeeds(self, command: str, timeout: float = 60) -> str:
        result: dict[str, str] = {}

        def attempt() -> bool:
            try:
                code, out = self.execute(command, timeout=max(5.0, timeout / 4))
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

    def stop(self, service: str) -> None:
        self.succeed(f"systemctl stop {service}")

    def start_service(self, service: str) -> None:
        self.succeed(f"systemctl start {service}")
