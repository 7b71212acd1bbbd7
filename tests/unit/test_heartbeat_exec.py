"""The wrapper at heartbeat's own path: heartbeat's self-restart by exec exits, for systemd to
start it afresh; every call with arguments reaches the real binary (docs/split-brain.md)."""
import subprocess
from pathlib import Path

WRAPPER = Path(__file__).parents[2] / "images/director/mkosi.extra/usr/libexec/appliance/heartbeat-exec"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(WRAPPER), *args], capture_output=True, text=True, check=False)


def test_the_self_restart_exits_75_so_the_unit_restarts_heartbeat():
    assert run().returncode == 75
    assert run("-R", "-C", "all").returncode == 75


def test_the_units_calls_go_to_the_real_binary():
    for args in (["-f"], ["-k"]):
        done = run(*args)
        assert done.returncode != 75
        # on a host without the diverted binary the exec itself names where it went
        assert "/usr/lib/heartbeat-real/heartbeat" in done.stderr or Path("/usr/lib/heartbeat-real/heartbeat").exists()
