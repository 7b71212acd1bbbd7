"""What a node runs now (applied.json): written by first boot and `appliance apply`, read at
every later boot and by `builder apply` (through `appliance config`). Light on purpose (no
profile code): `appliance config` and `apply` must answer fast under TCG."""
from __future__ import annotations

import json
import time
from pathlib import Path

from builder import contract

STATE = Path(contract.STATE_DIR)


def under(state: Path, fact: str) -> Path:
    """A state file the contract names (contract.APPLIED...) in `state`: STATE_DIR, or a test's."""
    return state / Path(fact).name


def node(state: Path = STATE) -> dict:
    """node.json: what first boot made of this node's seed (role, addresses, VIPs, stack...)."""
    return json.loads(under(state, contract.NODE_JSON).read_text())


def applied_path(state: Path = STATE) -> Path:
    return under(state, contract.APPLIED)


def read(state: Path = STATE) -> dict:
    """{"instance", "by", "at", "data"}: data is a seed's appliance.json (secret and host key too)."""
    return json.loads(applied_path(state).read_text())


def stamp(entry: dict) -> str:
    """One applied configuration, named: its instance and a digest of what it says."""
    import hashlib
    digest = hashlib.sha256(json.dumps(entry["data"], sort_keys=True).encode()).hexdigest()[:16]
    return f"{entry['instance']} {digest}\n"


def rendered_here(entry: dict, root: Path) -> bool:
    """The root's files are the applied configuration `entry`'s (contract.RENDERED says so). A root
    that does not say so (an update's fresh root, or one older than the stamp) must be rendered again."""
    try:
        return (root / contract.RENDERED.lstrip("/")).read_text() == stamp(entry)
    except OSError:
        return False


def mark(entry: dict, root: Path) -> None:
    """Say on the root that its files are now the applied configuration `entry`'s."""
    from builder.files import write_atomic
    write_atomic(root / contract.RENDERED.lstrip("/"), stamp(entry))


def write(state: Path, instance: str, data: dict | None, how: str, root: Path | None = None) -> None:
    """applied.json, then (with `root`, whose files were just written from it) the root's stamp."""
    from builder.files import write_atomic  # not for readers: `appliance status` must be quick
    entry = {"instance": instance, "by": how, "at": int(time.time()), "data": data}
    write_atomic(applied_path(state), json.dumps(entry, sort_keys=True) + "\n", 0o600)
    if root is not None:
        mark(entry, root)
