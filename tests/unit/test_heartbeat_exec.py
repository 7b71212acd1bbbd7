"""The wrapper at heartbeat's own path: inside heartbeat.service, heartbeat's self-restart by
exec exits for systemd to start it afresh; every other call reaches the real binary
(docs/split-brain.md)."""
import subprocess
from pathlib import Path

WRAPPER = Path(__file__).parents[2] / "images/director/mkosi.extra/usr/libexec/appliance/heartbeat-exec"
REAL = "/usr/lib/heartbeat-real/heartbeat"


def run(tmp_path: Path, cgroup: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "cgroup").write_text(f"0::{cgroup}\n")
    return subprocess.run(["sh", str(WRAPPER), *args], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "HEARTBEAT_EXEC_CGROUP": str(tmp_path / "cgroup")})


def test_the_self_restart_inside_the_unit_exits_75_so_the_unit_restarts_heartbeat(tmp_path: Path):
    assert run(tmp_path, "/system.slice/heartbeat.service").returncode == 75
    assert run(tmp_path, "/system.slice/heartbeat.service", "-R", "-C", "all").returncode == 75


def test_every_other_call_goes_to_the_real_binary(tmp_path: Path):
    calls = [("/system.slice/heartbeat.service", ["-f"]), ("/system.slice/heartbeat.service", ["-k"]),
             # a start by hand or the boot suite's config check (through the guest agent)
             ("/system.slice/qemu-guest-agent.service", []), ("/user.slice/session-1.scope", [])]
    for cgroup, args in calls:
        done = run(tmp_path, cgroup, *args)
        assert done.returncode != 75, (cgroup, args)
        assert REAL in done.stderr or Path(REAL).exists(), (cgroup, args, done.stderr)
