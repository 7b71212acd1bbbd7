"""The lab's log receiver: systemd-journal-remote in the lab's namespace, where every node's
systemd-journal-upload sends its journal ([logging] remote). The suite reads it with journalctl.

    with JournalReceiver(cluster) as logs:
        logs.wait_for(survivor.name, "Entering MASTER STATE", timeout=60)
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from lab import wait

PORT = 19532  # systemd-journal-remote's registered HTTP port
RECEIVER = "/lib/systemd/systemd-journal-remote"


class JournalReceiver:
    def __init__(self, cluster):
        self.cluster = cluster
        self.dir = cluster.workdir / "journal-remote"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> JournalReceiver:
        if not Path(RECEIVER).exists():
            raise FileNotFoundError(f"{RECEIVER} is missing: `python -m builder host-setup --tests`")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.log = open(self.dir.with_suffix(".log"), "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.cluster.netns, RECEIVER,
             f"--listen-http={self.cluster.segment.client_address}:{PORT}", f"--output={self.dir}/"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"systemd-journal-remote exited: {self.dir.with_suffix('.log').read_text()}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()

    def lines(self, host: str, pattern: str) -> list[str]:
        """The received journal lines of `host` that match `pattern` (journalctl's -g)."""
        out = subprocess.run(["journalctl", f"--directory={self.dir}", f"_HOSTNAME={host}", "-g", pattern,
                              "-o", "cat", "--no-pager", "-q"], capture_output=True, text=True, check=False)
        return out.stdout.splitlines()

    def wait_for(self, host: str, pattern: str, timeout: float) -> tuple[list[str], float]:
        started = time.monotonic()
        found = wait.until(lambda: self.lines(host, pattern), timeout,
                           f"{host}'s /{pattern}/ at the lab's log receiver", interval=1)
        return found, time.monotonic() - started
