"""Run commands in a guest through the QEMU guest agent, over qemu.qmp's protocol classes.

The agent speaks QMP without a greeting or capabilities negotiation, so this is qemu.qmp's
``QEMUMonitorProtocol`` connected with ``negotiate=False`` -- the way QEMU's own
``qemu-ga-client`` does it. It listens on a virtio-serial port only the hypervisor can reach:
the images need no network login for the tests.

Errors: every failure (no socket, agent not up yet, connection dropped, an error reply, a
command still running at its deadline) is one ``GuestAgentError``; callers that wait for a
guest retry on it.
"""
from __future__ import annotations

import base64
import contextlib
import random
import time
from typing import cast

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from builder.errors import LabError
from lab import wait


class GuestAgentError(LabError):
    pass


def _close(qga: QEMUMonitorProtocol) -> None:
    with contextlib.suppress(QMPError, OSError, EOFError):  # a dropped line is closed already
        qga.close()


class GuestAgent:
    """One short connection per call: the agent's port takes one client at a time, and an
    operator may want to reach a running lab cluster from another shell."""

    def __init__(self, path: str):
        self.path = path

    def _session(self, timeout: float) -> QEMUMonitorProtocol:
        qga = QEMUMonitorProtocol(self.path)
        try:
            qga.connect(negotiate=False)
            qga.settimeout(timeout)
            # guest-sync with a fresh id: whatever an interrupted exchange left behind is
            # not taken for this call's answer
            token = random.randrange(1 << 31)
            if qga.cmd("guest-sync", id=token) != token:
                raise GuestAgentError("guest-sync answered with another id")
        except BaseException:
            _close(qga)
            raise
        return qga

    def call(self, command: str, timeout: float = 10, **arguments) -> object:
        try:
            qga = self._session(wait.scaled(timeout))
            try:
                return qga.cmd(command, **arguments)
            finally:
                _close(qga)
        except (QMPError, OSError, TimeoutError, ValueError) as e:
            raise GuestAgentError(f"{command}: {type(e).__name__}: {e}") from e

    def ping(self) -> bool:
        try:
            self.call("guest-ping", timeout=3)
            return True
        except GuestAgentError:
            return False

    def exec(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run `sh -c command`; returns (exit code, stdout + stderr)."""
        try:
            qga = self._session(wait.scaled(10))
            try:
                started = cast(dict, qga.cmd("guest-exec", path="/bin/sh", arg=["-c", command],
                                             **{"capture-output": True}))
                pid = started["pid"]
                timeout = wait.scaled(timeout)
                deadline, pause = time.monotonic() + timeout, 0.05
                while True:
                    status = cast(dict, qga.cmd("guest-exec-status", pid=pid))
                    if status.get("exited"):
                        out = b"".join(base64.b64decode(status.get(k, ""))
                                       for k in ("out-data", "err-data"))
                        return status.get("exitcode", -1), out.decode(errors="replace")
                    if time.monotonic() > deadline:
                        raise GuestAgentError(f"command still running after {timeout}s: {command}")
                    # short commands come back at once; a long one is asked twice a second, not
                    # five times: each ask is a qemu-ga journal line the director ships to the lab
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
            finally:
                _close(qga)
        except (QMPError, OSError, TimeoutError, ValueError) as e:
            raise GuestAgentError(f"guest-exec: {type(e).__name__}: {e}") from e
