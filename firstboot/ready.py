"""Print the line a harness waits for, once this node's services are up (appliance-ready.service).

Apart from configure on purpose: it runs at every boot while the node is busiest, and needs
neither Jinja2 nor the profile code (importing them cost ~0.7 s of CPU on a TCG vCPU)::

    APPLIANCE READY node=loadb1 role=director address=192.168.0.103 instance=howto-loadb1-…
"""
from __future__ import annotations

from pathlib import Path

from builder import contract
from builder.run import run
from firstboot import state as applied

STATE = Path(contract.STATE_DIR)
READY, FAILED = contract.READY, contract.FAILED


def inactive(services: list[str]) -> list[str]:
    """The services not active, asked in one systemctl call (it prints one state per unit)."""
    if not services:
        return []
    states = run(["systemctl", "is-active", *services], check=False).stdout.split()
    states += ["unknown"] * (len(services) - len(states))
    return [s for s, state in zip(services, states, strict=True) if state != "active"]


def ready(state: Path = STATE) -> int:
    """Print the ready line once the role's services are up (or say which are not)."""
    node = applied.node(state)
    down = inactive(node["services"])
    if down:
        print(f"{FAILED} node={node['node']} role={node['role']} inactive={','.join(down)}",
              flush=True)
        return 1
    print(f"{READY} node={node['node']} role={node['role']} address={node['address']} "
          f"instance={node['instance']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(ready())
