"""A cluster on the desk: `python -m lab up PROFILE` boots it exactly as the suite does and
keeps it until Ctrl-C or `python -m lab down`; `python -m lab ...` drives it
from another shell (console, crash, cables, services).

The cluster lives in its own network namespace (UP_NETNS, beside a test run's). The only way
in from the host is a TCP forward bound to 127.0.0.1: socat accepts the browser's connection
on the host and, per connection, a second socat inside the namespace connects to the VIP. No
route, veth or bridge joins the lab to a real interface.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import tty
from pathlib import Path

from builder import contract, remote
from builder.errors import LabError
from lab import accel as accel_probe
from lab import net, prometheus
from lab.cluster import Cluster
from lab.paths import ROOT
from lab.prometheus import Prometheus

STATE_DIR = ROOT / "build" / "up"
STATE = STATE_DIR / "state.json"
LOCK = STATE_DIR / "lock"
DETACH = b"\x1d"  # Ctrl-]


class UpError(LabError):
    """Something the user can fix: the message says what."""


def _running_state() -> dict | None:
    """The state of a running `up`, or None (a stale state file is not a running cluster)."""
    try:
        state = json.loads(STATE.read_text())
        os.kill(state["pid"], 0)
        return state
    except (OSError, ValueError, KeyError):
        return None


def up(profile_path: Path, port: int, boot_timeout: float = contract.BOOT_TIMEOUT) -> int:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    lock = open(LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        state = _running_state() or {}
        raise UpError(f"a cluster is already up (profile {state.get('profile', '?')}, "
                      f"pid {state.get('pid', '?')}): stop it with `python -m lab down` "
                      "(or Ctrl-C where it runs) first") from None
    _check_port(port)
    _check_port(port + 1)  # the lab's Prometheus
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    started = time.monotonic()
    accel = accel_probe.probe()
    state = {"profile": str(profile_path), "pid": os.getpid(), "port": port,
             "workdir": str(STATE_DIR / profile_path.stem), "accel": accel}
    STATE.write_text(json.dumps(state) + "\n")  # `down` finds this session even while it boots
    print(f"booting {profile_path} under QEMU ({accel}); this takes a few minutes under TCG",
          flush=True)
    cluster = Cluster(profile_path, STATE_DIR / profile_path.stem, accel, boot_timeout,
                      netns=net.UP_NETNS, progress=lambda line: print(f"  {line}", flush=True))
    forwards: list[subprocess.Popen] = []

    def forward(local: int, address: str, remote: int) -> None:
        """127.0.0.1:local -> address:remote inside the lab's namespace (127.0.0.1 only)."""
        forwards.append(subprocess.Popen(
            ["socat", f"TCP-LISTEN:{local},bind=127.0.0.1,reuseaddr,fork",
             f"EXEC:ip netns exec {net.UP_NETNS} socat STDIO TCP\\:{address}\\:{remote}"],
            start_new_session=True))
    try:
        with cluster, Prometheus(cluster) as prom:
            s = cluster.spec.web_service
            forward(port, str(cluster.spec.vip), s.port)
            forward(port + 1, prom.address, prometheus.PORT)
            stop = _stop_requested()
            print(f"\n{cluster.spec.name}: {len(cluster.vms)} machines ready in "
                  f"{time.monotonic() - started:.0f} s", flush=True)
            for name, vm in cluster.vms.items():
                print(f"  {name:12} console log {vm.console_log}")
            print(f"\nopen http://127.0.0.1:{port}/ in your browser (the VIP {cluster.spec.vip}:{s.port}, "
                  "forwarded on 127.0.0.1 only)")
            print(f"the lab's Prometheus, with the shipped alert rules: http://127.0.0.1:{port + 1}/alerts "
                  f"(its data: {prom.dir})")
            print("from another shell: python -m lab --help   (status, console, crash, block, systemctl...)")
            login = remote.ssh_argv(cluster.spec.directors[0], cluster.reach, "appliance status")
            print(f"log in as an operator (the lab's key; host keys verified):\n  {shlex.join(login)}")
            print("Ctrl-C or `python -m lab down` stops every machine and removes the lab network",
                  flush=True)
            while not stop.is_set():
                for f in forwards:
                    if f.poll() is not None:
                        raise UpError(f"a browser forward (socat) exited with {f.returncode}")
                stop.wait(1)
            print("\nstopping the cluster...", flush=True)
    finally:
        for f in forwards:
            if f.poll() is None:
                os.killpg(f.pid, signal.SIGTERM)
            f.wait(5)
        STATE.unlink(missing_ok=True)
        lock.close()
    print("down: every machine stopped, lab network removed")
    return 0


def _check_port(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise UpError(f"127.0.0.1:{port} is taken ({e.strerror}): choose another with --port") from None


def _raise_interrupt(*_):
    raise KeyboardInterrupt  # a boot interrupted by `down`: the same teardown as Ctrl-C


def _stop_requested() -> threading.Event:
    """Once booted, Ctrl-C, SIGTERM (`down`) and SIGHUP end the session's wait."""
    event = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: event.set())
    return event


def down(timeout: float = 60) -> int:
    """Stop a running `up` (its own teardown), or clean what a killed one left behind."""
    state = _running_state()
    if state:
        os.kill(state["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _running_state() and time.monotonic() < deadline:
            time.sleep(0.5)
        if _running_state():
            raise UpError(f"`up` (pid {state['pid']}) did not stop within {timeout:.0f} s")
        print(f"stopped the cluster of {state['profile']}")
    elif net.exists(net.UP_NETNS):
        net.destroy(net.UP_NETNS)  # an `up` killed with SIGKILL: its machines live in there
        print(f"removed the leftovers of an `up` that did not stop cleanly ({net.UP_NETNS})")
    else:
        print("no cluster is up")
    STATE.unlink(missing_ok=True)
    return 0


def attached() -> Cluster:
    """The cluster a running `up` booted, to drive from this process."""
    state = _running_state()
    if not state:
        raise UpError("no cluster is up: start one with `python -m lab up PROFILE` (make up)")
    return Cluster(Path(state["profile"]), Path(state["workdir"]), state["accel"],
                   netns=net.UP_NETNS).attach()


def console(machine) -> int:
    """Attach the terminal to a machine's serial console until Ctrl-]."""
    path = machine.dir / "console.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as e:
        raise UpError(f"{machine.name}: no console ({e.strerror}); is it running? "
                      "`python -m lab status`") from None
    print(f"{machine.name}: serial console; Ctrl-] leaves (log: {machine.console_log})\r", flush=True)
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved:
            tty.setraw(stdin)
        sock.sendall(b"\r")
        while True:
            ready, _, _ = select.select([sock, stdin], [], [])
            if sock in ready:
                data = sock.recv(4096)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in ready:
                data = os.read(stdin, 1024)
                if not data or DETACH in data:
                    break
                sock.sendall(data)
    finally:
        if saved:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()
    print(f"\nleft {machine.name}'s console")
    return 0
