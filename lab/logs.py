"""The lab's log receiver: systemd-journal-remote in the lab's namespace, where every node's
systemd-journal-upload sends its journal ([logging] remote). The suite reads it with journalctl.

    with JournalReceiver(cluster) as logs:
        logs.wait_for(survivor.name, "Keepalived_vrrp", "Entering MASTER STATE", timeout=60)
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

    def lines(self, host: str, tag: str, pattern: str) -> list[str]:
        """The received journal lines of `host` from syslog identifier `tag` (the daemon's own:
        the guest agent logs the lab's commands, grep patterns and all) matching `pattern`."""
        out = subprocess.run(["journalctl", f"--directory={self.dir}", f"_HOSTNAME={host}", "-t", tag,
                              "-g", pattern, "-o", "cat", "--no-pager", "-q"],
                             capture_output=True, text=True, check=False)
        return out.stdout.splitlines()

    def wait_for(self, host: str, tag: str, pattern: str, timeout: float,
                 more_than: int = 0) -> tuple[list[str], float]:
        """The matching lines once there are more than `more_than` (those before a fault)."""
        started = time.monotonic()

        def arrived() -> list[str] | None:
            got = self.lines(host, tag, pattern)
            return got if len(got) > more_than else None
        found = wait.until(arrived, timeout,
                           f"{host}'s {tag} /{pattern}/ at the lab's log receiver", interval=1)
        return found, time.monotonic() - started
