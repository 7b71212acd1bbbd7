"""The operator's side of day 2: run commands on the cluster's nodes over SSH, verified.

Every connection checks the node's host key against the cluster's known_hosts (made by
`builder seed`, builder/hostkeys.py): strict, no prompt, no trust on first use. The key that
logs in is the operator's own (ssh-agent or ~/.ssh), one of the profile's [access] ssh_keys.
"""
from __future__ import annotations

import concurrent.futures
import json
import subprocess
from pathlib import Path

from builder.errors import ApplianceError
from builder.profile import Cluster, Node

CONNECT_TIMEOUT = 5  # seconds: a node that does not answer by then is reported down


class RemoteError(ApplianceError):
    """A node could not be reached or its command failed; the message names the node."""


def ssh_argv(node: Node, known_hosts: Path, command: str) -> list[str]:
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
            "-o", "LogLevel=ERROR", f"root@{node.address}", command]


def run(node: Node, known_hosts: Path, command: str, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(ssh_argv(node, known_hosts, command), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{node.name} ({node.address}): `{command}` took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RemoteError(f"{node.name} ({node.address}): `{command}` exited {proc.returncode}: "
                          f"{proc.stderr.strip() or proc.stdout.strip()}",
                          hint="is the node up, and is your key one of the profile's [access] ssh_keys?")
    return proc.stdout


def statuses(cluster: Cluster, known_hosts: Path) -> dict[str, dict | str]:
    """Every node's `appliance status --json`, asked at once; a node that fails gives its error."""
    def ask(node: Node) -> dict | str:
        try:
            return json.loads(run(node, known_hosts, "appliance status --json", timeout=15))
        except (RemoteError, ValueError) as e:
            return str(e)
    with concurrent.futures.ThreadPoolExecutor(len(cluster.nodes)) as pool:
        return dict(zip((n.name for n in cluster.nodes), pool.map(ask, cluster.nodes), strict=True))


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
