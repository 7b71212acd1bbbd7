"""The operator's side of day 2: run commands on the cluster's nodes over SSH, verified.

Every connection checks the node's host key against the cluster's known_hosts (made by
`builder seed`, builder/hostkeys.py): strict, no prompt, no trust on first use. The key that
logs in is the operator's own (ssh-agent or ~/.ssh), one of the profile's [access] ssh_keys.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder import contract
from builder.errors import ApplianceError
from builder.profile import Cluster, Node

log = logging.getLogger("builder.remote")
CONNECT_TIMEOUT = 5  # seconds: a node that does not answer by then is reported down
# seconds a shared connection outlives its last use: a handshake costs ~1 s on a TCG guest
CONTROL_PERSIST = 60
# a shared connection is a Unix socket: its path fits sun_path (104 bytes on BSD and macOS, 108
# on Linux). ssh names it %C (40 hex digits) in the control directory and binds a temporary
# name 17 characters longer first: a longer directory gets no sharing, not an unreachable node
SOCKET_PATH_MAX = 104
CONTROL_NAME = 40 + 17


class RemoteError(ApplianceError):
    """A node could not be reached or its command failed; the message names the node."""


@dataclass(frozen=True)
class Reach:
    """How the operator's ssh gets to the nodes: the cluster's known_hosts, optionally a key
    of its own (else ssh-agent or ~/.ssh) and a command it runs under (the lab's netns)."""
    known_hosts: Path
    identity: Path | None = None
    via: tuple[str, ...] = ()
    control: Path | None = None   # a directory for shared connections: one handshake per node

    def shares(self) -> bool:
        """Connections are shared: a control directory whose sockets' paths fit (a long TMPDIR,
        or a lab namespace named after a long profile, made ssh fail every command)."""
        return self.control is not None and len(str(self.control)) + 1 + CONTROL_NAME < SOCKET_PATH_MAX

    def options(self) -> list[str]:
        key = ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"] if self.identity else []
        shared = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control}/%C",
                  "-o", f"ControlPersist={CONTROL_PERSIST}"] if self.shares() else []
        # a node that died (power loss, reboot) ends the connection in 10 s, not at TCP's timeout
        return key + shared + ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2"]


def ssh_argv(node: Node, reach: Reach, command: str) -> list[str]:
    return [*reach.via, "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={reach.known_hosts}", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
            # the key is checked under the node's name: its address may be about to change
            "-o", f"HostKeyAlias={node.name}", "-o", "LogLevel=ERROR", *reach.options(),
            f"root@{node.address}", command]


def run(node: Node, reach: Reach, command: str, timeout: float = 30, stdin: str | None = None) -> str:
    started = time.monotonic()
    try:
        proc = subprocess.run(ssh_argv(node, reach, command), capture_output=True, text=True,
                              timeout=timeout, check=False, input=stdin)
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{node.name} ({node.address}): `{command}` took over {timeout:.0f} s") from None
    log.debug("%s: %s (%.2f s, exit %d)", node.name, command, time.monotonic() - started, proc.returncode)
    if proc.returncode != 0:
        raise RemoteError(f"{node.name} ({node.address}): `{command}` exited {proc.returncode}: "
                          f"{proc.stderr.strip() or proc.stdout.strip()}",
                          hint="is the node up, and is your key one of the profile's [access] ssh_keys?")
    return proc.stdout


def send(node: Node, reach: Reach, local: Path, there: str, timeout: float = 900) -> None:
    """Copy the directory `local` to `there` on the node (replaced whole), over the verified
    connection: tar through ssh, with nothing but tar and ssh on either side."""
    started = time.monotonic()
    argv = ssh_argv(node, reach, f"rm -rf {there} && mkdir -p {there} && tar -C {there} -xf -")
    with subprocess.Popen(["tar", "-C", str(local), "-cf", "-", "."], stdout=subprocess.PIPE) as tar:
        proc = subprocess.run(argv, stdin=tar.stdout, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or tar.returncode != 0:
        raise RemoteError(f"{node.name} ({node.address}): copying {local} to {there} failed: "
                          f"{proc.stderr.strip() or 'tar exited ' + str(tar.returncode)}")
    log.debug("%s: sent %s to %s (%.1f s)", node.name, local, there, time.monotonic() - started)


def stream(node: Node, reach: Reach, command: str) -> subprocess.Popen:
    """`command` started on the node, its output read as it comes (the caller kills it)."""
    log.debug("%s: %s (streamed)", node.name, command)
    return subprocess.Popen(ssh_argv(node, reach, command), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)


class Session:
    """`appliance session` on a node: `appliance config` and `apply` asked as JSON lines of one
    Python process, started once for all of an apply's questions (each call of `run` starts one,
    ~1 s on a TCG guest). `ask` gives what `appliance COMMAND` would print and fails as `run`
    does; a node whose image has no `session` (older than this builder) is asked per call."""

    def __init__(self, node: Node, reach: Reach, start: bool = True):
        self.node, self.reach, self.answered = node, reach, False
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.said: list[str | None] = []  # its stderr: read as it comes, so that it never fills up
        self.proc: subprocess.Popen | None = None  # None: asked per call
        if not start:
            return
        command = f"{contract.APPLIANCE_CLI} session"
        log.debug("%s: %s (a session)", node.name, command)
        self.proc = subprocess.Popen(ssh_argv(node, reach, command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.said.append), daemon=True).start()

    @staticmethod
    def _read(stream, put) -> None:
        for line in stream:
            put(line)
        put(None)

    def ask(self, command: str, stdin: str | None = None, timeout: float = 30) -> str:
        if self.proc is None:
            return self._per_call(command, stdin, timeout)
        started, where = time.monotonic(), f"{self.node.name} ({self.node.address})"
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"do": command, "stdin": stdin}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it ended: said below
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RemoteError(f"{where}: `appliance {command}` took over {timeout:.0f} s") from None
        if line is None:
            said = self.close()
            if not self.answered and "session" in said:  # argparse: "invalid choice: 'session'"
                log.debug("%s: no `appliance session` (an older image): asked per call", self.node.name)
                return self._per_call(command, stdin, timeout)
            raise RemoteError(f"{where}: `appliance session` ended: {said or 'no answer'}",
                              hint="is the node up, and is your key one of the profile's [access] ssh_keys?")
        self.answered = True
        answer = json.loads(line)
        log.debug("%s: appliance %s (%.2f s in a session, exit %d)", self.node.name, command,
                  time.monotonic() - started, answer["exit"])
        if answer["exit"] != 0:
            raise RemoteError(f"{where}: `appliance {command}` exited {answer['exit']}: "
                              f"{answer['stderr'].strip() or answer['stdout'].strip()}")
        return answer["stdout"]

    def _per_call(self, command: str, stdin: str | None, timeout: float) -> str:
        return run(self.node, self.reach, f"{contract.APPLIANCE_CLI} {command}", timeout, stdin)

    def close(self) -> str:
        """End the session (its stdin closed: the node's loop ends); what it said on stderr."""
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 2  # the stderr reader's last lines
        while (not self.said or self.said[-1] is not None) and time.monotonic() < deadline:
            time.sleep(0.01)
        return "".join(line for line in self.said if line).strip()


@contextlib.contextmanager
def sessions(nodes: tuple[Node, ...], reach: Reach, start: bool = True) -> Iterator[dict[str, Session]]:
    """A Session on each node, all started at once (their handshakes and Python starts overlap);
    start=False asks per call."""
    opened = {n.name: Session(n, reach, start) for n in nodes}
    try:
        yield opened
    finally:
        for s in opened.values():
            s.close()


def forget(node: Node, reach: Reach) -> None:
    """Close the shared connection to a node that is going away (it would hang its users)."""
    if reach.control:
        subprocess.run([*ssh_argv(node, reach, "")[:-2], "-O", "exit", f"root@{node.address}"],
                       capture_output=True, timeout=10, check=False)


def on_nodes(nodes: tuple[Node, ...], reach: Reach, command: str, timeout: float = 30) -> dict[str, str | RemoteError]:
    """`command`'s output on each node, asked at once; a node that fails gives its error."""
    def ask(node: Node) -> str | RemoteError:
        try:
            return run(node, reach, command, timeout)
        except RemoteError as e:
            return e
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        return dict(zip((n.name for n in nodes), pool.map(ask, nodes), strict=True))


def statuses(cluster: Cluster, reach: Reach, nodes: tuple[Node, ...] | None = None) -> dict[str, dict | str]:
    """Every node's `appliance status --json`, asked at once; a node that fails gives its error."""
    found: dict[str, dict | str] = {}
    for name, out in on_nodes(cluster.nodes if nodes is None else nodes, reach, "appliance status --json", 15).items():
        try:
            found[name] = str(out) if isinstance(out, RemoteError) else json.loads(out)
        except ValueError as e:
            found[name] = str(e)
    return found


def cluster_table(cluster: Cluster, found: dict[str, dict | str]) -> str:
    """One line per node, then the real servers as each director's IPVS sees them."""
    lines = [f"{'node':12} {'role':10} {'address':15} state"]
    holders = []
    for node in cluster.nodes:
        s = found.get(node.name)
        if not isinstance(s, dict):
            lines.append(f"{node.name:12} {node.role:10} {str(node.address):15} UNREACHABLE: {s}")
            continue
        if node.is_director:
            hung = " NOT ANSWERING" if s.get("answering") is False else ""
            state = f"{s.get('stack')}: {s.get('state')}{hung}"
            if s.get("vips"):
                holders.append(node.name)
                state += f", holds {', '.join(s['vips'])}"
            state += f", sync {'+'.join(s.get('sync') or []) or 'none'}"
            age = s.get("peer_heard_age")
            state += f", peer heard {age:.0f} s ago" if age is not None else ", peer never heard"
        else:
            state = f"VIP on lo: {', '.join(s.get('vips') or []) or 'none'}"
        lines.append(f"{node.name:12} {node.role:10} {str(node.address):15} {state}")
    if len(holders) != 1:
        lines.append(f"WARNING: {len(holders)} directors hold the VIP ({', '.join(holders) or 'none'})")
    for node in cluster.directors:
        s = found.get(node.name)
        for v in (s.get("services", []) if isinstance(s, dict) else []):
            servers = ", ".join(f"{r['address']} w{r['weight']} {r['active']}a/{r['inactive']}i"
                                for r in v["real_servers"])
            lines.append(f"{node.name} {v['protocol']} {v['vip']}:{v['port']} {v['scheduler']}: {servers}")
    return "\n".join(lines)
