"""What the lab asks of a director stack, asked the way each stack answers.

The suite's checks are stack-neutral -- who holds the VIP, who balances, which sync daemon
runs, whether the pair agrees -- and each has a heartbeat variant (the howto's own commands:
cl_status, `ldirectord ldirectord.cf status`, LVSSyncDaemonSwap) and a keepalived one (its
VRRP state in /run/keepalived.state, the IPVS table it loads, `ipvsadm -L --daemon`).
"""
from __future__ import annotations

from dataclasses import dataclass

from builder import contract, profile
from lab.machine import Machine

PROBE = contract.HAWATCH_PROBE_TIMEOUT  # seconds a daemon has to answer its status interface
# seconds `ldirectord ldirectord.cf status` may take: Perl compiles ldirectord, LWP and
# IO::Socket::SSL before it looks at the PID file, 56 s on a loaded TCG host (2026-12-03)
LDIRECTORD_STATUS = 180


@dataclass(frozen=True)
class View:
    """One director's view of the pair, read in one guest command (each costs ~0.5 s under TCG)."""
    in_pair: bool     # heartbeat: it sees its peer active; keepalived: MASTER or BACKUP, not FAULT
    busy: bool        # heartbeat is moving resources
    holds_vip: bool
    state: str        # heartbeat's rscstatus (all, local, none...) or the VRRP state; HUNG when
                      # the daemon did not answer its own status interface in time
    answering: bool = True


class Stack:
    name = ""
    daemon = ""                         # the unit that decides who holds the VIP
    units: tuple[str, ...] = ()         # what runs the director role, started in this order
    kill_units: tuple[str, ...] = ()    # what a crashed director's revive clears first
    heals_by_restart = False            # heartbeat v1 restarts itself after a partition heals
    cut_off_steps_out = False           # a director that reaches nothing gives the VIP up

    def __init__(self, spec: profile.Cluster):
        self.spec = spec

    runtime_files: tuple[str, ...] = ()  # what the stack leaves in /run that a reboot would clear

    def revive_script(self, now: float) -> str:
        """What a reboot would clear on a crashed director, run while its link is still cut
        (Cluster.revive): its cluster daemons (kill_units: heartbeat's children, send_arp and a
        heartbeat-started ldirectord live in heartbeat's cgroup), what they held (the image's
        ha-reset, the watchdog's own reset: VIPs, ARP announcer, sync master), the IPVS table,
        the backup sync daemon, the stack's runtime files, the neighbour cache; and the clock,
        which stood still while the VM was stopped. Fails if the VIP is still there."""
        units = " ".join(self.kill_units)
        iface, vip = self.spec.network.interface, self.spec.vip
        return "\n".join([
            f"systemctl kill -s KILL {units}", f"systemctl stop {units}", "systemctl reset-failed",
            contract.HA_RESET, "ipvsadm -C", f"systemctl stop {contract.SYNC_BACKUP_UNIT}",
            f"rm -rf {' '.join(self.runtime_files)}" if self.runtime_files else "true",
            "ip neigh flush all", f"date -s @{now:.3f} >/dev/null",
            f"! ip -4 -o addr show dev {iface} | grep -F ' {vip}/'", ""])

    def vip_in(self, ip_addr_output: str) -> bool:
        """Whether `ip addr` shows any of the profile's VIPs (IPv4 or IPv6): they move together,
        so a director with any of them is a holder."""
        return any(f" {vip}/" in ip_addr_output for vip in self.spec.vips)

    def view(self, vm: Machine, peer: Machine) -> View | None:
        raise NotImplementedError

    def answers_command(self) -> str:
        """A guest command that succeeds when the stack's daemon answers its own status
        interface within PROBE seconds, asked as the watchdog asks (firstboot/hawatch.py) but
        by the lab itself, in shell (python's start costs a second under TCG): a hung daemon
        fails it, whatever its state file says."""
        raise NotImplementedError

    def answers(self, vm: Machine) -> bool:
        return vm.execute(self.answers_command(), timeout=30)[0] == 0

    def hang_command(self) -> str:
        """A guest command that hangs the stack's deciding daemon: there, silent, not dead."""
        raise NotImplementedError

    def balancing(self, vm: Machine) -> bool:
        """Its IPVS manager runs on vm (ldirectord, or keepalived's checkers)."""
        raise NotImplementedError

    def balancing_command(self) -> str:
        """A guest command that succeeds once the IPVS manager runs."""
        raise NotImplementedError

    def sync_running(self, vm: Machine, role: str) -> bool:
        """The IPVS sync daemon `role` (master or backup) runs on vm."""
        return f"{role} sync daemon" in vm.succeed("ipvsadm -L --daemon")

    def pair_intact(self, holder: Machine, other: Machine) -> bool:
        """No split: the pair still agrees that `holder` is the one (the link carries it)."""
        raise NotImplementedError

    def starts(self, vm: Machine) -> int:
        """How often the stack's daemon started on vm this boot."""
        raise NotImplementedError

    def restarts_seen(self, active: Machine, revived: Machine) -> int:
        """Evidence that `revived` came back as a fresh member, counted where the stack logs it."""
        raise NotImplementedError

    def takeover_evidence(self, new: Machine, dead: Machine) -> str | None:
        """A guest command that succeeds when new's journal shows it took over from dead."""
        raise NotImplementedError

    def takeover_line(self, dead: Machine) -> tuple[str, str]:
        """The syslog identifier and journal line (journalctl -t, -g) the new active's daemon
        writes when it takes over from dead."""
        raise NotImplementedError

    def log_signs(self) -> dict[str, str]:
        """Journal patterns (grep -E) a soak counts: how close the stack came to a false failover."""
        raise NotImplementedError

    def journal_units(self) -> str:
        return " ".join(f"-u {u}" for u in dict.fromkeys(self.units + self.kill_units))


class Heartbeat(Stack):
    name = "heartbeat"
    daemon = "heartbeat.service"
    kill_units = ("heartbeat.service", "ldirectord.service", "logd.service")
    runtime_files = ("/run/heartbeat/rsctmp/*", "/run/resource-agents/*", "/run/heartbeat.pid",
                     "/run/ldirectord.*.pid")

    @property
    def units(self) -> tuple[str, ...]:  # type: ignore[override]
        both = self.spec.heartbeat.ldirectord_on_both
        return (contract.SYNC_BACKUP_UNIT, "heartbeat.service") + (("ldirectord.service",) if both else ())

    @property
    def cut_off_steps_out(self) -> bool:  # type: ignore[override]
        """vip-takeover's step-out: needs its ping nodes, and runs with the fast takeover."""
        return self.spec.heartbeat.fast_takeover and bool(self.spec.heartbeat.ping_nodes)

    @property
    def heals_by_restart(self) -> bool:  # type: ignore[override]
        """Without the step-out, both directors restart when a partition heals."""
        return not self.cut_off_steps_out

    def view(self, vm: Machine, peer: Machine) -> View | None:
        t = f"timeout {PROBE:g}"
        out = vm.execute(
            f"s=$({t} cl_status nodestatus {peer.name} 2>/dev/null); r=$?; echo \"${{s:-?}} $r\"; "
            f"s=$({t} cl_status rscstatus 2>/dev/null); echo \"${{s:-?}}\"; "
            f"ip -4 -o addr show dev {self.spec.network.interface}")[1].splitlines()
        if len(out) >= 1 and out[0].split()[-1:] == ["124"]:  # timeout(1): asked, no answer
            return View(False, False, self.vip_in("\n".join(out[2:])), "HUNG", answering=False)
        if len(out) < 2 or "?" in (out[0].split()[0], out[1].strip()):
            return None  # heartbeat cannot say (stopped, restarting)
        peer_status, rsc = out[0].split()[0], out[1].strip()
        return View(peer_status == "active", rsc == "transition", self.vip_in("\n".join(out[2:])), rsc)


    def answers_command(self) -> str:
        return f"timeout {PROBE:g} cl_status hbstatus >/dev/null"

    def hang_command(self) -> str:
        return "systemctl kill --signal=STOP heartbeat.service"

    def balancing(self, vm: Machine) -> bool:
        return "running with pid" in vm.execute("ldirectord ldirectord.cf status", timeout=LDIRECTORD_STATUS)[1]

    def balancing_command(self) -> str:
        return "ldirectord ldirectord.cf status 2>&1 | grep -q 'is running'"

    def sync_running(self, vm: Machine, role: str) -> bool:
        # the howto's own check, and the kernel's answer must agree with it
        said = vm.succeed(f"{contract.SYNC_SCRIPT} {role} status")
        return said.startswith(f"{role} running") and super().sync_running(vm, role)

    def pair_intact(self, holder: Machine, other: Machine) -> bool:
        return "active" in holder.succeed(f"cl_status nodestatus {other.name}")

    def starts(self, vm: Machine) -> int:
        return int(vm.execute("journalctl -b --no-pager -o cat -u heartbeat 2>/dev/null "
                              "| grep -c 'Starting heartbeat'")[1].strip() or 0)

    def restarts_seen(self, active: Machine, revived: Machine) -> int:
        return int(active.succeed(f"journalctl -b -u heartbeat 2>/dev/null | grep -c "
                                  f"'Heartbeat restart on node {revived.name}' || true"))

    def takeover_evidence(self, new: Machine, dead: Machine) -> str | None:
        if self.spec.heartbeat.fast_takeover:  # the VIP came from vip-takeover
            return f"journalctl -b -t vip-takeover | grep -q '{dead.name} is dead: added'"
        return None

    def takeover_line(self, dead: Machine) -> tuple[str, str]:
        return "heartbeat", f"node {dead.name}: is dead"

    def log_signs(self) -> dict[str, str]:
        return {"late heartbeats": "[Ll]ate heartbeat", "dead verdicts": "is dead",
                "restarts": "Heartbeat restart|Starting heartbeat"}


class Keepalived(Stack):
    name = "keepalived"
    daemon = contract.KEEPALIVED_UNIT
    units = (contract.SYNC_BACKUP_UNIT, contract.KEEPALIVED_CHECKERS_UNIT, contract.KEEPALIVED_UNIT)
    kill_units = (contract.KEEPALIVED_UNIT, contract.KEEPALIVED_CHECKERS_UNIT)
    runtime_files = (contract.KEEPALIVED_STATE,)
    cut_off_steps_out = True            # FAULT when the tracked NIC loses carrier
    STATE = contract.KEEPALIVED_STATE  # written by the image's vrrp-state (the notify FIFO's reader)

    def view(self, vm: Machine, peer: Machine) -> View | None:
        out = vm.execute(f"cat {self.STATE} 2>/dev/null || echo '?'; "
                         f"( {self.answers_command()} ) && echo answers || echo hung; "
                         f"ip -4 -o addr show dev {self.spec.network.interface}")[1].splitlines()
        if len(out) < 2 or out[0].strip() == "?":
            return None
        state, answering = out[0].strip(), out[1].strip() == "answers"
        holds = self.vip_in("\n".join(out[2:]))
        if not answering:  # its state file says what it was when it stopped answering
            return View(False, False, holds, "HUNG", answering=False)
        return View(state in ("MASTER", "BACKUP"), False, holds, state)


    def answers_command(self) -> str:
        # SIGUSR1: the VRRP process rewrites its state dump from the loop that sends its adverts
        dump, tries = contract.KEEPALIVED_STATE_DUMP, int(PROBE * 10)
        return (f"p=$(cat {contract.KEEPALIVED_VRRP_PID}) && b=$(date -r {dump} +%s%N 2>/dev/null); "
                f"kill -USR1 \"$p\" && for i in $(seq {tries}); do sleep 0.1; "
                f"a=$(date -r {dump} +%s%N 2>/dev/null) && [ \"$a\" != \"$b\" ] && exit 0; done; exit 1")

    def hang_command(self) -> str:
        return f"kill -STOP $(cat {contract.KEEPALIVED_VRRP_PID})"

    def balancing(self, vm: Machine) -> bool:
        return vm.execute(self.balancing_command())[0] == 0

    def balancing_command(self) -> str:
        s = self.spec.web_service
        return (f"systemctl is-active -q {contract.KEEPALIVED_CHECKERS_UNIT} && "
                f"ipvsadm -L -n | grep -q '^{s.protocol.upper()}  {self.spec.vip}:{s.port} '")

    def pair_intact(self, holder: Machine, other: Machine) -> bool:
        # VRRP has no membership to ask: the other defers (BACKUP or FAULT), not a second MASTER
        view = self.view(other, holder)
        return view is not None and view.state != "MASTER" and not view.holds_vip

    def starts(self, vm: Machine) -> int:
        return int(vm.execute("journalctl -b --no-pager -o cat -u keepalived 2>/dev/null "
                              "| grep -c 'Starting Keepalived v'")[1].strip() or 0)

    def restarts_seen(self, active: Machine, revived: Machine) -> int:
        return self.starts(revived)

    def takeover_evidence(self, new: Machine, dead: Machine) -> str | None:
        return "journalctl -b -u keepalived -o cat | grep -q 'Entering MASTER STATE'"

    def takeover_line(self, dead: Machine) -> tuple[str, str]:
        return "Keepalived_vrrp", "Entering MASTER STATE"

    def log_signs(self) -> dict[str, str]:
        return {"MASTER transitions": "Entering MASTER STATE", "faults": "Entering FAULT STATE",
                "restarts": "Starting Keepalived v"}


def for_profile(spec: profile.Cluster) -> Stack:
    return (Keepalived if spec.keepalived else Heartbeat)(spec)
