"""The HA stack's state as Prometheus metrics, for node_exporter's textfile collector.

The HA watchdog (firstboot/hawatch.py) knows, every second, what the stack says, whether it
answered, which VIPs this director holds and whether another MAC answers for one of them; it
writes that here as a .prom file (atomically: node_exporter never reads half a file). IPVS
itself (per real server weight and connections) is node_exporter's own ipvs collector.

Every metric is declared once in METRICS (name, type, help): the writer, the shipped alert
rules' unit test and the docs read it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from firstboot.status import ipvs_connections, sync_threads

METRICS: dict[str, tuple[str, str]] = {
    "appliance_vip_held": ("gauge", "1 when this director holds the VIP (label vip), else 0"),
    "appliance_ha_state": ("gauge", "1 for the stack's state as the watchdog last read it (label "
                           "state: MASTER, BACKUP, FAULT; heartbeat: all, local, none; HUNG, STOPPED...)"),
    "appliance_ha_answering": ("gauge", "1 when the stack answered the watchdog's last probe"),
    "appliance_ha_transitions_total": ("counter", "changes of the stack's state the watchdog has seen"),
    "appliance_ha_restarts_total": ("counter", "restarts and step-outs the watchdog made"),
    "appliance_peer_heard": ("gauge", "1 when the peer director was heard within the dead time"),
    "appliance_late_heartbeats_total": ("counter", "heartbeat's late-heartbeat warnings, keepalived's "
                                        "adverts received late or out of order"),
    "appliance_sync_daemon_running": ("gauge", "1 per IPVS sync daemon running (label mode: master, "
                                      "backup)"),
    "appliance_sync_connections": ("gauge", "connections in this director's IPVS table"),
    "appliance_second_holder": ("gauge", "1 when another MAC answers ARP for a VIP this director holds"),
}


@dataclass(frozen=True)
class Sample:
    """One probe's worth of facts about a director's stack."""
    state: str
    answering: bool
    vips: dict[str, bool]                   # VIP -> held by this director
    transitions: int = 0
    restarts: int = 0
    peer_heard: bool = True
    late_heartbeats: int = 0
    sync: tuple[str, ...] = ()              # the sync daemons running: "master", "backup"
    connections: int = 0
    second_holder: bool = False
    modes: tuple[str, ...] = field(default=("master", "backup"))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def text(s: Sample) -> str:
    """The Prometheus text exposition of a sample: HELP and TYPE, then the values."""
    values: dict[str, list[tuple[str, float]]] = {
        "appliance_vip_held": [(f'vip="{_label(v)}"', int(held)) for v, held in sorted(s.vips.items())],
        "appliance_ha_state": [(f'state="{_label(s.state)}"', 1)],
        "appliance_ha_answering": [("", int(s.answering))],
        "appliance_ha_transitions_total": [("", s.transitions)],
        "appliance_ha_restarts_total": [("", s.restarts)],
        "appliance_peer_heard": [("", int(s.peer_heard))],
        "appliance_late_heartbeats_total": [("", s.late_heartbeats)],
        "appliance_sync_daemon_running": [(f'mode="{m}"', int(m in s.sync)) for m in s.modes],
        "appliance_sync_connections": [("", s.connections)],
        "appliance_second_holder": [("", int(s.second_holder))],
    }
    lines = []
    for name, (kind, help_) in METRICS.items():
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{{{labels}}} {value}" if labels else f"{name} {value}" for labels, value in values[name]]
    return "\n".join(lines) + "\n"


LATE = "Late heartbeat"  # heartbeat's warning when a peer's heartbeat passes warntime
CURSOR = "-- cursor: "   # journalctl --show-cursor's last line


def node_status(run, node: str) -> str | None:
    """heartbeat's word for a node (`cl_status nodestatus`): "active" (heard), "up" (a ping node,
    or starting), "dead", "init"; None when heartbeat does not answer."""
    out = run(["cl_status", "nodestatus", node])
    return out.stdout.strip() if out and out.returncode == 0 else None


class Collector:
    """What the watchdog adds to its probe for the metrics: state changes counted, and the
    slower facts (sync daemons, connections, the peer, late heartbeats) read every EVERY
    probes, so that a metrics-enabled director spawns no more than a process a second."""
    EVERY = 5

    def __init__(self, info: dict, run, peer_answers, late_heartbeats: bool = True):
        self.info, self.run, self.peer_answers = info, run, peer_answers
        self.read_late = late_heartbeats and info["stack"] == "heartbeat"  # a journal search: metrics only
        self.peer_heard_at: float | None = None  # wall clock, for `appliance status`
        self.state: str | None = None
        self.transitions = 0
        self.tick = 0
        self.slow: dict = {"sync": (), "connections": 0, "peer_heard": True, "late": 0}
        self.cursor: str | None = None  # where the last journal read of heartbeat's lines ended

    def _late_heartbeats(self) -> int:
        """The count so far plus heartbeat's journal lines since the last read: a search of the
        whole boot's journal every EVERY probes cost a director ~5 % of a CPU under TCG after an
        hour, and more the longer it ran."""
        argv = ["journalctl", "-b", "-t", "heartbeat", "-o", "cat", "-q", "--show-cursor"]
        out = self.run(argv + ([f"--after-cursor={self.cursor}"] if self.cursor else []))
        if not out or out.returncode != 0:
            return self.slow["late"]
        lines = out.stdout.splitlines()
        if lines and lines[-1].startswith(CURSOR):
            self.cursor = lines.pop()[len(CURSOR):]
        return self.slow["late"] + sum(LATE in line for line in lines)

    def _peer_heard(self, state: str) -> bool:
        if self.info["stack"] == "heartbeat":
            return node_status(self.run, self.info["peer"]) in ("active", "up")
        # keepalived: a BACKUP hears the MASTER's adverts (else it would be MASTER); a MASTER
        # hears nothing from its backup in VRRP, so it asks the LAN for the peer's address
        return state.startswith("BACKUP") or self.peer_answers()

    def _read_slow(self, state: str) -> None:
        sync, connections = tuple(sync_threads()), ipvs_connections()
        heard = self._peer_heard(state)
        if heard:
            self.peer_heard_at = time.time()
        self.slow = {"sync": sync, "connections": connections, "peer_heard": heard,
                     "late": self._late_heartbeats() if self.read_late else 0}

    def sample(self, state: str, answering: bool, held: list[str], restarts: int, second: bool) -> Sample:
        if self.state is not None and state != self.state:
            self.transitions += 1
        self.state = state
        if self.tick % self.EVERY == 0:
            self._read_slow(state)
        self.tick += 1
        return Sample(state, answering, {v: v in held for v in self.info.get("vips", [])},
                      transitions=self.transitions, restarts=restarts, peer_heard=self.slow["peer_heard"],
                      late_heartbeats=self.slow["late"], sync=self.slow["sync"],
                      connections=self.slow["connections"], second_holder=second)
