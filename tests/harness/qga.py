"""A minimal QEMU guest agent client: run a command in the guest, get exit code and output.

The agent listens on a virtio-serial port that only the hypervisor can reach; the images
need no network login for the tests.
"""
from __future__ import annotations

import base64
import itertools
import json
import socket
import time

_ids = itertools.count(1)


class GuestAgentError(Exception):
    pass


class GuestAgent:
    def __init__(self, path: str):
        self.path = path
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self, timeout: float) -> None:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.path)
        self.sock.settimeout(timeout)
        # guest-sync flushes whatever a previous, interrupted exchange left behind
        sync_id = next(_ids) + 10_000_000
        self._send({"execute": "guest-sync", "arguments": {"id": sync_id}})
        while self._receive().get("return") != sync_id:
            pass

    def close(self) -> None:
        if self.sock:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _send(self, msg: dict) -> None:
        assert self.sock
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def _receive(self) -> dict:
        assert self.sock
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise GuestAgentError("guest agent closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line.strip(b"\xff") or b"{}")

    def call(self, command: str, timeout: float = 10, **arguments) -> object:
        try:
            self._connect(timeout)
            self._send({"execute": command, "arguments": arguments})
            reply = self._receive()
        except (OSError, ValueError) as e:
            self.close()
            raise GuestAgentError(f"{command}: {e}") from e
        if "error" in reply:
            raise GuestAgentError(f"{command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def ping(self) -> bool:
        try:
            self.call("guest-ping", timeout=3)
            return True
        except GuestAgentError:
            return False
        finally:
            self.close()

    def exec(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run `sh -c command`; returns (exit code, stdout + stderr).

        The connection is closed afterwards: the agent's port takes one client at a time, and
        a developer may want to attach to a running test cluster too.
        """
        try:
            return self._exec(command, timeout)
        finally:
            self.close()

    def _exec(self, command: str, timeout: float) -> tuple[int, str]:
        pid = self.call("guest-exec", path="/bin/sh", arg=["-c", command],
                        **{"capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("guest-exec-status", pid=pid)
            if status.get("exited"):
                out = b"".join(base64.b64decode(status.get(k, "")) for k in ("out-data", "err-data"))
                return status.get("exitcode", -1), out.decode(errors="replace")
            if time.monotonic() > deadline:
                raise GuestAgentError(f"command still running after {timeout}s: {command}")
            time.sleep(0.2)
