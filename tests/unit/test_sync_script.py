"""LVSSyncDaemonSwap (the director image's sync-daemon script, for both stacks) against a
stand-in ipvsadm: a stop the kernel never acknowledges is bounded and judged by the daemon
list, and a daemon that does not start is reported, not passed off as success."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from builder import contract
from tests.conftest import ROOT

SCRIPT = ROOT / "images/director/mkosi.extra" / contract.SYNC_SCRIPT.lstrip("/")

# ipvsadm as far as the script uses it: the daemon list lives in $STATE/<role>; FAIL_START makes
# --start-daemon fail, HANG_STOP makes --stop-daemon stop the daemon and then never answer (the
# kernel's EINTR for a thread that had not run yet: generic netlink sends no ACK); a second start
# while one is under way fails as the kernel's does (File exists), START_DELAY makes a start slow
FAKE = """#!/bin/sh
case "$*" in
"-L --daemon")
    for f in "$STATE"/*; do [ -e "$f" ] && echo "$(basename "$f") sync daemon (mcast=eth1, syncid=0)"; done
    exit 0 ;;
--start-daemon\\ *) [ -n "$FAIL_START" ] && { echo "ipvsadm: No such device" >&2; exit 2; }
    mkdir "$STATE.kernel/$2" 2>/dev/null || { echo "ipvsadm: File exists" >&2; exit 2; }
    sleep "${START_DELAY:-0}"; touch "$STATE/$2" ;;
--stop-daemon\\ *) rm -f "$STATE/$2"; rmdir "$STATE.kernel/$2"; [ -n "$HANG_STOP" ] && exec sleep 60 ;;
esac
"""


def environment(tmp_path: Path, **env: str) -> dict[str, str]:
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "ipvsadm").write_text(FAKE)
    (bin_ / "ipvsadm").chmod(0o755)
    for d in ("state", "state.kernel"):
        (tmp_path / d).mkdir(exist_ok=True)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "STATE": str(tmp_path / "state"),
            "IPVSADM_TIMEOUT": "5", "LVSSYNC_LOCK": str(tmp_path / "lock"), **env}


def sync(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env=environment(tmp_path, IPVSADM_TIMEOUT="1", **env))
    return proc, time.monotonic() - started


def test_two_starts_at_once_both_succeed_one_after_the_other(tmp_path):
    """keepalived's notify FIFO and the HA watchdog's repair may start the master together: the
    second waits for the first and then finds it running, instead of failing on "File exists"."""
    env = environment(tmp_path, START_DELAY="1")
    both = [subprocess.Popen(["sh", str(SCRIPT), "master", "start"], env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    assert [p.wait(timeout=30) for p in both] == [0, 0], [p.stderr.read() for p in both if p.stderr]
    assert sync(tmp_path, "master", "status")[0].stdout.startswith("master running")


def test_start_and_stop_change_the_daemon_list(tmp_path):
    assert sync(tmp_path, "master", "start")[0].returncode == 0
    assert sync(tmp_path, "master", "status")[0].stdout.startswith("master running")
    assert sync(tmp_path, "master", "stop")[0].returncode == 0
    assert sync(tmp_path, "master", "status")[0].stdout.startswith("master stopped")


def test_a_stop_the_kernel_never_answers_is_bounded_and_still_succeeds(tmp_path):
    sync(tmp_path, "master", "start")
    proc, took = sync(tmp_path, "master", "stop", HANG_STOP="1")
    assert proc.returncode == 0, proc.stderr
    assert took < 10
    assert sync(tmp_path, "master", "status")[0].stdout.startswith("master stopped")


def test_a_daemon_that_does_not_start_is_reported(tmp_path):
    proc, _ = sync(tmp_path, "backup", "start", FAIL_START="1")
    assert proc.returncode == 1
    assert "the backup sync daemon did not start" in proc.stderr
