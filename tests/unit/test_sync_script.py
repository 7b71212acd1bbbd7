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
# kernel's EINTR for a thread that had not run yet: generic netlink sends no ACK)
FAKE = """#!/bin/sh
case "$*" in
"-L --daemon")
    for f in "$STATE"/*; do [ -e "$f" ] && echo "$(basename "$f") sync daemon (mcast=eth1, syncid=0)"; done
    exit 0 ;;
--start-daemon\\ *) [ -n "$FAIL_START" ] && { echo "ipvsadm: No such device" >&2; exit 2; }; touch "$STATE/$2" ;;
--stop-daemon\\ *) rm -f "$STATE/$2"; [ -n "$HANG_STOP" ] && exec sleep 60 ;;
esac
"""


def sync(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "ipvsadm").write_text(FAKE)
    (bin_ / "ipvsadm").chmod(0o755)
    (tmp_path / "state").mkdir(exist_ok=True)
    started = time.monotonic()
    proc = subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "STATE": str(tmp_path / "state"),
                               "IPVSADM_TIMEOUT": "1", **env})
    return proc, time.monotonic() - started


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
