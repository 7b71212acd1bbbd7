"""Day 2: the node keeps what `apply` made live across reboots (an old seed never undoes it, a
new one wins), and the host drains before it removes, standby director first."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from builder import contract, day2, plan, profile, render, seed
from builder.remote import Reach
from firstboot import appliance, configure
from tests.conftest import ROOT

KEY = "3f9a1c5e7b2d4086" * 4


@pytest.fixture(autouse=True)
def per_call(monkeypatch):
    """The directors asked per call (remote.run, which each test fakes), not through a session
    over ssh; test_a_session_* speak the session's protocol itself."""
    import functools
    monkeypatch.setattr(day2.remote, "sessions", functools.partial(day2.remote.sessions, start=False))


@pytest.fixture
def web3():
    return profile.load(ROOT / "profiles" / "three-web.toml")


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A director's root and state under tmp_path, whose seed drive holds whatever `attach` puts in."""
    root, state, drive = tmp_path / "root", tmp_path / "state", tmp_path / "drive"
    told: list[list[str]] = []
    monkeypatch.setattr(configure, "find_seed_device", lambda: "/dev/sr0")
    monkeypatch.setattr(configure, "mounted", lambda device: contextlib.nullcontext(drive))
    monkeypatch.setattr(configure, "apply_live", lambda seed, root: None)
    monkeypatch.setattr(configure, "run", lambda argv, **kw: told.append(argv))

    monkeypatch.setattr(appliance, "_systemctl", lambda *args: told.append(["systemctl", *args]) or 3)
    monkeypatch.setattr(appliance, "_hup", lambda pidfile: told.append(["kill", "-HUP", pidfile]) or True)

    def attach(cluster, name):
        for f in drive.glob("*"):
            f.unlink()
        drive.mkdir(exist_ok=True)
        for fname, data in seed.seed_files(cluster, cluster.node(name), seed.Keys(KEY)).items():
            (drive / fname).write_bytes(data)
    return root, state, attach, told


def weight(root: Path, address: str) -> int | None:
    """A real server's weight in ldirectord.cf (the howto leaves weight 1 out)."""
    found = re.search(rf"real={address}:80 gate ?(\d*)", (root / "etc/ha.d/ldirectord.cf").read_text())
    return None if found is None else int(found.group(1) or 1)


def test_an_applied_change_survives_a_reboot_with_the_old_seed_and_a_new_seed_wins(web3, node):
    root, state, attach, told = node
    attach(web3, "lvs-a")
    assert configure.configure(state, root) == 0 and weight(root, "172.20.40.21") == 3
    heavier = day2.reweighted(web3, "app1", 5)
    out = appliance.apply(day2.change(seed.Keys(KEY), web3, heavier, "lvs-a"), state, root)
    assert out["written"] == ["/etc/ha.d/ldirectord.cf"] and out["removed"] == []
    assert out["reloaded"] == ["ldirectord"] and ["kill", "-HUP", "/run/ldirectord.ldirectord.cf.pid"] in told
    assert weight(root, "172.20.40.21") == 5
    assert configure.configure(state, root) == 0  # reboot, the first seed still in the drive
    assert weight(root, "172.20.40.21") == 5
    assert json.loads((state / "applied.json").read_text())["by"] == "apply"
    lighter = day2.reweighted(web3, "app1", 2)
    attach(lighter, "lvs-a")  # a seed made since: it wins
    assert configure.configure(state, root) == 0 and weight(root, "172.20.40.21") == 2


def test_a_fresh_root_is_rendered_again_from_what_the_node_runs(web3, node, monkeypatch):
    """An update replaces the root and keeps the state (issue 25): the node comes back as it
    ran, an applied change included, whether its old seed is still attached or not."""
    import shutil
    root, state, attach, told = node
    attach(web3, "lvs-a")
    configure.configure(state, root)
    stamp = (root / contract.RENDERED.lstrip("/")).read_text()
    assert stamp.startswith(configure.applied.read(state)["instance"] + " ")
    appliance.apply(day2.change(seed.Keys(KEY), web3, day2.reweighted(web3, "app1", 5), "lvs-a"), state, root)
    assert (root / contract.RENDERED.lstrip("/")).read_text() != stamp  # the apply is the root's now
    for attached in (True, False):
        shutil.rmtree(root)
        if not attached:
            monkeypatch.setattr(configure, "find_seed_device", lambda: None)
        told.clear()
        assert configure.configure(state, root) == 0
        assert weight(root, "172.20.40.21") == 5 and (root / contract.SSH_HOST_KEY.lstrip("/")).exists() is False
        assert (root / "etc/ha.d/authkeys").stat().st_mode & 0o777 == 0o600
        assert configure.applied.rendered_here(configure.applied.read(state), root)
        assert ["systemctl", "start", "--no-block", "ldirectord.service"] in told  # its units enabled again
    told.clear()
    (root / "etc/ha.d/ldirectord.cf").write_text("kept")  # a reboot on the same root renders nothing
    assert configure.configure(state, root) == 0 and (root / "etc/ha.d/ldirectord.cf").read_text() == "kept"
    assert told == []


def test_a_failed_trial_kills_a_stack_that_holds_no_vip_and_stops_one_that_does(tmp_path, monkeypatch, capsys):
    """heartbeat holds a stop until its communication is up: a failed try of an update on a director
    whose peer is away waited initdead (30 s) before its reboot. Only a boot on trial is touched."""
    killed = []
    monkeypatch.setattr(appliance.subprocess, "run",
                        lambda argv, **kw: killed.append(argv) or subprocess.CompletedProcess(argv, 0))
    monkeypatch.setattr(appliance, "_journal", lambda line: None)
    monkeypatch.setattr(contract, "TRIAL_BOOT_VAR", str(tmp_path / "LoaderBootCountPath"))
    assert appliance.main(["trial-failed"]) == 1 and "not on trial" in capsys.readouterr().err and killed == []
    (tmp_path / "LoaderBootCountPath").write_text("x")
    monkeypatch.setattr(appliance, "STATE", tmp_path / "state")
    assert appliance.main(["trial-failed"]) == 0 and killed == []  # not configured: no stack
    monkeypatch.setattr(appliance.applied, "node", lambda state: {"stack": "heartbeat", "vips": ["172.20.40.100"]})
    monkeypatch.setattr(appliance, "held_vips", lambda node: ["172.20.40.100"])
    assert appliance.main(["trial-failed"]) == 0 and killed == []  # the reboot's stop hands the VIP over
    monkeypatch.setattr(appliance, "held_vips", lambda node: [])
    assert appliance.main(["trial-failed"]) == 0
    assert killed == [["systemctl", "kill", "--signal=SIGKILL", "heartbeat.service"]]
    monkeypatch.setattr(appliance.applied, "node", lambda state: {"role": "realserver"})
    killed.clear()
    assert appliance.main(["trial-failed"]) == 0 and killed == []  # a real server has no stack


def test_appliance_config_answers_without_argparse_and_names_a_missing_state(web3, node, monkeypatch, capsys):
    root, state, attach, _ = node
    monkeypatch.setattr(appliance, "STATE", state)
    monkeypatch.setattr(appliance, "held_vips", lambda node: [])
    assert appliance.main(["config"]) == 1 and "applied.json" in capsys.readouterr().err
    attach(web3, "lvs-a")
    configure.configure(state, root)
    capsys.readouterr()  # first boot's own lines
    assert appliance.main(["config"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["node"] == "lvs-a" and out["holds"] == [] and out["by"] == "seed"
    assert out["layout"] == contract.FILE_LAYOUT  # `builder apply` renders for it
    assert profile.parse(out["cluster"], "config") == web3 and "secret" not in json.dumps(out)


def test_a_node_refuses_another_nodes_change_and_changes_nothing(web3, node):
    root, state, attach, _ = node
    attach(web3, "lvs-a")
    configure.configure(state, root)
    before = (root / "etc/ha.d/ldirectord.cf").read_text()
    heavier = day2.reweighted(web3, "app1", 5)
    with pytest.raises(appliance.ApplyError, match="this is lvs-a; the change is for lvs-b"):
        appliance.apply(day2.change(seed.Keys(KEY), web3, heavier, "lvs-b"), state, root)
    assert (root / "etc/ha.d/ldirectord.cf").read_text() == before
    assert json.loads((state / "applied.json").read_text())["by"] == "seed"


def test_a_staged_seed_wins_once_and_the_old_seed_stays_ignored(web3, node):
    root, state, attach, _ = node
    attach(web3, "lvs-a")
    configure.configure(state, root)
    files = seed.seed_files(day2.reweighted(web3, "app2", 7), web3.node("lvs-a"), seed.Keys(KEY))
    entry = {"instance": seed.instance_of(files), "data": json.loads(files["appliance.json"])}
    appliance.stage(entry, state)
    assert configure.configure(state, root) == 0 and weight(root, "172.20.40.22") == 7
    assert not (state / "next-seed.json").exists()
    assert configure.configure(state, root) == 0 and weight(root, "172.20.40.22") == 7


class FakeCluster:
    """The directors as the host sees them over SSH: applied configs, IPVS tables, pushes."""

    def __init__(self, cluster, active="lvs-a"):
        self.cluster, self.active, self.pushed = cluster, active, []
        self.running = {d.name: profile.to_dict(cluster) for d in cluster.directors}
        self.table = {str(r.address): [r.weight, 3] for r in cluster.real_servers}  # weight, active

    def run(self, node, reach, command, timeout=30, stdin=None):
        if command.endswith("config"):
            holds = [str(self.cluster.vip)] if node.name == self.active else []
            return json.dumps({"cluster": self.running[node.name], "holds": holds})
        if command == "ipvsadm -L -n":
            return (f"TCP  {self.cluster.vip}:80 wrr\n"
                    + "".join(f"  -> {a}:80 Route {w} {n} 0\n" for a, (w, n) in self.table.items()))
        data = json.loads(stdin)["data"]
        self.pushed.append((node.name, {r["name"]: r.get("weight", 1) for r in data["cluster"]["real_servers"]}))
        if node.is_director:
            self.running[node.name] = data["cluster"]
            c = profile.parse(data["cluster"])
            self.table = {str(r.address): [r.weight, self.table.get(str(r.address), [0, 0])[1]]
                          for r in c.real_servers}
            for entry in self.table.values():
                if entry[0] == 0:
                    entry[1] = 0  # the drained server's last download ends
        return json.dumps({"written": ["x"], "removed": [], "reloaded": ["ldirectord"]})

    def stream(self, node, reach, command):
        """A director's table every few ms, as watch_tables() asks for, until killed."""
        return TableStream(lambda: self.run(node, reach, "ipvsadm -L -n"))

    def patch(self, monkeypatch):
        monkeypatch.setattr(day2.remote, "run", self.run)
        monkeypatch.setattr(day2.remote, "stream", self.stream)


def test_apply_drains_a_leaving_server_then_removes_it_standby_director_first(web3, monkeypatch):
    fake = FakeCluster(web3)
    fake.patch(monkeypatch)
    smaller = dataclasses.replace(web3, real_servers=web3.real_servers[:2])
    lines: list[str] = []
    op = day2.Operation(smaller, Reach(Path("kh")), seed.Keys(KEY), lines.append)
    changes = op.apply(drain_timeout=5)
    assert [str(c) for c in changes] == ["real_servers.app3: removed"]
    order = [n for n, _ in fake.pushed]
    assert order[:4] == ["lvs-b", "lvs-a", "lvs-b", "lvs-a"] and sorted(order[4:]) == ["app1", "app2"]
    assert fake.pushed[0][1] == {"app1": 3, "app2": 2, "app3": 0}  # drained first
    assert fake.pushed[2][1] == {"app1": 3, "app2": 2}             # then removed
    assert any("app3: no active connection left" in line for line in lines)
    assert list(fake.table) == ["172.20.40.21", "172.20.40.22"]


def test_apply_refuses_before_touching_a_node(web3, monkeypatch):
    fake = FakeCluster(web3)
    monkeypatch.setattr(day2.remote, "run", fake.run)
    renamed = dataclasses.replace(web3, domain="example.org")
    op = day2.Operation(renamed, Reach(Path("kh")), seed.Keys(KEY), lambda line: None)
    with pytest.raises(day2.Day2Error, match=r"domain: '\S+' -> 'example.org' \(needs --reboot"):
        op.apply()
    assert fake.pushed == []


def test_directors_that_disagree_are_named(web3, monkeypatch):
    fake = FakeCluster(web3)
    fake.running["lvs-b"] = profile.to_dict(day2.reweighted(web3, "app1", 4))
    monkeypatch.setattr(day2.remote, "run", fake.run)
    with pytest.raises(day2.Day2Error, match="lvs-a: differs, lvs-b: differs"):
        day2.running(web3, Reach(Path("kh")))


def test_a_director_on_an_older_file_layout_gets_keepalived_in_one_file(web3, monkeypatch):
    """`builder upgrade` drains nodes that still run an image from before the checkers' own
    daemon: their code reloads keepalived.conf alone, so the virtual servers must be in it (a
    keepalived.conf without them would have emptied their IPVS tables)."""
    kept = profile.load(ROOT / "profiles/keepalived.toml")
    moved = day2.reweighted(kept, "app1", 5)
    keys = seed.Keys(KEY)
    new = day2.change(keys, kept, moved, "lvs-a")
    assert "virtual_server" not in new["files"][contract.KEEPALIVED_CONF][0]
    assert "weight 5" in new["files"][contract.KEEPALIVED_CHECKERS_CONF][0]
    old = day2.change(keys, kept, moved, "lvs-a", layout=1)
    conf = old["files"][contract.KEEPALIVED_CONF][0]
    assert contract.KEEPALIVED_CHECKERS_CONF not in old["files"] and not old["removed"]
    assert conf.index("vrrp_instance") < conf.index("virtual_server 172.20.40.100 80 {") and "weight 5" in conf
    assert conf.count("global_defs") == 1 and conf.count("virtual_server ") == len(kept.services)
    # each director says its layout; an image that says none is layout 1
    fake = FakeCluster(web3)

    def run(node, reach, command, timeout=0, stdin=None):
        out = fake.run(node, reach, command, timeout, stdin)
        return json.dumps({**json.loads(out), "layout": 2}) if node.name == "lvs-b" else out
    monkeypatch.setattr(day2.remote, "run", run)
    assert dict(day2.running(web3, Reach(Path("kh"))).layouts) == {"lvs-a": 1, "lvs-b": contract.FILE_LAYOUT}


def test_a_table_shows_a_change_only_with_every_server_and_the_new_weights(web3):
    status = {"services": [{"real_servers": [{"address": "172.20.40.21", "weight": 3},
                                             {"address": "172.20.40.22", "weight": 0},
                                             {"address": "172.20.40.23", "weight": 1},
                                             {"address": "127.0.0.1", "weight": 0}]}]}
    assert day2.shows(web3, status, set())                  # a quiesced server still counts
    assert not day2.shows(web3, status, {"app2"})           # ...but not as re-weighted
    assert not day2.shows(dataclasses.replace(web3, real_servers=web3.real_servers[:2]), status, set())
    assert plan.drained(web3, dataclasses.replace(web3, real_servers=web3.real_servers[1:])) == ["app1"]


def test_apply_reboot_stages_each_node_and_waits_for_it_standby_director_first(web3, monkeypatch):
    fake = FakeCluster(web3)
    booted: dict[str, str] = {}
    staged: dict[str, str] = {}
    said: list[str] = []

    def run(node, reach, command, timeout=30, stdin=None):
        if command.endswith(" stage"):
            staged[node.name] = json.loads(stdin)["instance"]
            return "staged"
        if command.startswith("systemd-run"):
            booted[node.name] = staged[node.name]
            said.append(node.name)
            return ""
        if command.endswith("config") and node.name in booted:
            return json.dumps({"instance": booted[node.name], "cluster": {}})
        if command.endswith("status --json"):
            return json.dumps({"answering": True})
        return fake.run(node, reach, command, timeout, stdin)
    monkeypatch.setattr(day2.remote, "run", run)
    monkeypatch.setattr(day2.remote, "forget", lambda node, reach: None)
    monkeypatch.setattr(day2.time, "sleep", lambda s: None)
    moved = dataclasses.replace(web3, domain="example.org")
    day2.Operation(moved, Reach(Path("kh")), seed.Keys(KEY), lambda line: None).reboot(timeout=5)
    assert said == ["lvs-b", "lvs-a", "app1", "app2", "app3"]
    files = seed.seed_files(moved, moved.node("app2"), seed.Keys(KEY))
    before = seed.seed_files(web3, web3.node("app2"), seed.Keys(KEY))
    assert staged["app2"] == seed.instance_of(files) != seed.instance_of(before)


@pytest.mark.parametrize("held, how, said", [(["172.20.40.100"], ("reload",), "reload"),
                                             ([], ("restart", "--no-block"), "restarting")])
def test_keepalived_reloads_on_the_master_and_restarts_on_a_backup(monkeypatch, held, how, said):
    """A backup's reload kept its down timer across a slow re-read and claimed the VIP (step 15);
    its restart is queued (a fixed second of VRRP shutdown) while `apply` goes on to the master."""
    told = []
    monkeypatch.setattr(appliance, "_systemctl", lambda *args: told.append(args) or 0)
    monkeypatch.setattr(appliance.applied, "node", lambda: {"interface": "eth0", "vips": ["172.20.40.100"]})
    monkeypatch.setattr(appliance, "held_vips", lambda info: held)
    assert appliance.reload([contract.KEEPALIVED_CONF]) == [f"keepalived ({said})"]
    assert (*how, "keepalived.service") in told


def test_a_change_of_real_servers_reloads_keepalived_checkers_alone_on_either_director(monkeypatch):
    """A VRRP reload pauses the master's adverts: on a starved guest the pause outlasted the
    backup's down timer and the VIP moved under load (step 18). The checkers' file is their own."""
    told = []
    monkeypatch.setattr(appliance, "_systemctl", lambda *args: told.append(args) or 0)
    for held in (["172.20.40.100"], []):
        told.clear()
        monkeypatch.setattr(appliance, "held_vips", lambda info, held=held: held)
        assert appliance.reload([contract.KEEPALIVED_CHECKERS_CONF]) == ["keepalived checkers (reload)"]
        assert ("reload", contract.KEEPALIVED_CHECKERS_UNIT) in told
        assert not [t for t in told if contract.KEEPALIVED_UNIT in t and t[0] != "is-active"]
    # and a weight in a rendered change touches the checkers' file only
    kept = profile.load(ROOT / "profiles/keepalived.toml")
    changed = dataclasses.replace(kept, real_servers=tuple(
        dataclasses.replace(r, weight=r.weight + 1) if r.name == "app1" else r for r in kept.real_servers))
    before, after = (render.keepalived_files(c, c.node("lvs-a")) for c in (kept, changed))
    assert [p for p in after if after[p] != before[p]] == [contract.KEEPALIVED_CHECKERS_CONF]


def test_a_new_tls_certificate_or_site_reloads_apache_gracefully(monkeypatch):
    told = []
    monkeypatch.setattr(appliance, "_systemctl", lambda *args: told.append(args) or 0)
    assert appliance.reload([contract.TLS_CERT, contract.TLS_KEY]) == ["apache2"]
    assert ("reload", "apache2.service") in told and ("restart", "apache2.service") not in told
    told.clear()
    assert appliance.reload([contract.SYSCTL_REALSERVER]) == [] and not [t for t in told if "apache2.service" in t]


def test_the_day2_bench_round_changes_one_thing_at_a_time_and_ends_on_the_profile(web3):
    from lab import bench_day2
    spec = dataclasses.replace(web3, real_servers=web3.real_servers[:-1])
    added, heavier, slower, back = bench_day2.changes(spec, web3)
    assert added == web3 and plan.diff(spec, added)
    assert [c.key for c in plan.diff(added, heavier)] == [f"real_servers.{web3.real_servers[0].name}.weight"]
    assert [c.key for c in plan.diff(heavier, slower)] == ["services.tcp/80.checkinterval"]
    assert back == spec and not plan.refusal(plan.diff(slower, back))


class TableStream:
    """What remote.stream() gives watch_tables(): `table()` then the end line, over and over,
    after `delay` seconds; a dead one ends at once (an unreachable director)."""

    def __init__(self, table, delay: float = 0, alive: bool = True):
        self.table, self.delay, self.alive, self.killed = table, delay, alive, False

    @property
    def stdout(self):
        time.sleep(self.delay)
        while self.alive and not self.killed:
            yield from self.table().splitlines(keepends=True)
            yield day2.TABLE_END + "\n"
            time.sleep(0.005)

    def poll(self):
        return 0 if self.killed or not self.alive else None

    def kill(self):
        self.killed = True

    def wait(self):
        return 0


PROC_IP_VS = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  AC142864:0050 wrr
  -> AC142815:0050      Route   3      1          0
"""


def test_the_tables_are_judged_only_once_every_director_has_shown_one(web3, monkeypatch):
    """Read from /proc/net/ip_vs (hex addresses) as each director's loop prints it."""
    commands: list[str] = []

    def stream(node, reach, command):
        commands.append(command)
        return TableStream(lambda: PROC_IP_VS, 0.3 if node.name == "lvs-b" else 0)
    monkeypatch.setattr(day2.remote, "stream", stream)
    seen: list[dict] = []
    started = time.monotonic()
    with day2.TableWatch(web3, Reach(Path("kh")), 5) as watch:
        watch.wait(lambda latest: bool(seen.append(dict(latest))) or True, 5, "x")
    assert time.monotonic() - started >= 0.3 and [set(s) for s in seen] == [{"lvs-a", "lvs-b"}]
    assert day2.ipvs_view(seen[0]["lvs-a"]) == {"172.20.40.21": 3}
    assert all("/proc/net/ip_vs" in c and "ipvsadm" not in c for c in commands)  # no process per look


EMPTY_IP_VS = "\n".join(PROC_IP_VS.splitlines()[:3]) + "\n"


@pytest.mark.parametrize("name, waits", [("keepalived.toml", True), ("three-web.toml", True), ("howto.toml", False)])
def test_a_standby_that_balances_too_counts_only_once_its_table_is_back(monkeypatch, name, waits):
    """keepalived's backup restarts in the background during `apply` (its table empty for a
    second): the change is shown only once both tables hold it. A heartbeat standby without
    ldirectord has no table at all, and the active's alone says it."""
    cluster = profile.load(ROOT / "profiles" / name)

    def hexed(address) -> str:
        return address.packed.hex().upper() + ":0050"
    shown = "".join([*PROC_IP_VS.splitlines(keepends=True)[:3], f"TCP  {hexed(cluster.vip)} wrr\n",
                     *(f"  -> {hexed(r.address)}      Route   {r.weight}      0          0\n"
                       for r in cluster.real_servers)])
    back_at = time.monotonic() + 0.5

    def stream(node, reach, command):
        standby = node.name == cluster.directors[1].name
        return TableStream(lambda: EMPTY_IP_VS if standby and time.monotonic() < back_at else shown)
    monkeypatch.setattr(day2.remote, "stream", stream)
    op = day2.Operation(cluster, Reach(Path("kh")), seed.Keys(KEY), lambda line: None)
    started = time.monotonic()
    with day2.TableWatch(cluster, Reach(Path("kh")), 5) as watch:
        op.directors_show(watch, cluster, set(), timeout=5)
    assert (time.monotonic() - started >= 0.4) == waits


def test_no_director_streaming_its_table_is_an_error_not_a_wait(web3, monkeypatch):
    monkeypatch.setattr(day2.remote, "stream", lambda node, reach, command: TableStream(str, alive=False))
    started = time.monotonic()
    with pytest.raises(day2.Day2Error, match="the change shown: not after"):
        with day2.TableWatch(web3, Reach(Path("kh")), 30) as watch:
            watch.wait(lambda latest: True, 30, "the change shown")
    assert time.monotonic() - started < 3


def test_a_dual_stack_director_shows_a_change_in_both_families():
    """`apply` waits for every real server in both families' services (a dual-stack apply once
    compared the IPv4 addresses with a table that held the IPv6 ones too, and never matched)."""
    c = profile.load(ROOT / "profiles" / "dual-stack.toml")

    def table(*servers):
        return {"services": [{"real_servers": [{"address": a, "weight": w, "active": 0, "inactive": 0}
                                               for a, w in servers]}]}
    v4 = (("172.20.40.21", 3), ("172.20.40.22", 2), ("127.0.0.1", 1))
    v6 = (("[2001:db8:40::21]", 3), ("[2001:db8:40::22]", 2), ("[::1]", 1))
    assert day2.shows(c, table(*v4, *v6), {"app1", "app2"})
    assert not day2.shows(c, table(*v4), set())                       # the IPv6 service not there yet
    assert not day2.shows(c, table(*v4, ("[2001:db8:40::21]", 0), v6[1]), {"app1"})  # not re-weighted
    # a table in /proc's long form reads the same
    assert day2.ipvs_view(table(("[2001:0db8:0040:0000:0000:0000:0000:0021]", 3))) == {"2001:db8:40::21": 3}


def test_a_configuration_the_directors_could_not_read_back_is_refused_before_any_node(web3, monkeypatch):
    """A cluster built in code is checked as a profile: one service's checkinterval changed on a
    profile of two once went to both directors, and every later apply failed to read it back."""
    fake = FakeCluster(web3)
    monkeypatch.setattr(day2.remote, "run", fake.run)
    second = dataclasses.replace(web3.services[0], vip=web3.vip + 1)
    two = dataclasses.replace(web3, services=(web3.services[0], second))
    day2.Operation(two, Reach(Path("kh")), seed.Keys(KEY), lambda line: None)  # a valid pair
    bumped = dataclasses.replace(two, services=(dataclasses.replace(two.services[0], checkinterval=9), second))
    with pytest.raises(profile.ProfileError, match="checkinterval differs between services"):
        day2.Operation(bumped, Reach(Path("kh")), seed.Keys(KEY), lambda line: None)
    assert fake.pushed == []


NODE_SIDE = """
import subprocess, sys
from firstboot import appliance
def run(command):
    subprocess.run(["echo", "systemctl says something"])  # a child's output: never an answer
    if command == "config":
        print('{"cluster": {}, "holds": []}')
        return 0
    data = sys.stdin.read()
    if data == "bad":
        print("appliance apply: this is lvs-a; the change is for lvs-b", file=sys.stderr)
        return 1
    print(len(data))
    return 0
appliance._run = run
raise SystemExit(appliance._session())
"""


def test_a_session_answers_config_and_apply_in_order_from_one_process(web3, monkeypatch):
    """Both sides of `appliance session` for real (the node side a local Python): each answer
    is what `appliance DO` would print, a failure raises as remote.run does, and what the
    daemons' tools print never mixes into the answers."""
    import sys
    monkeypatch.setattr(day2.remote, "ssh_argv", lambda node, reach, command:
                        [sys.executable, "-c", NODE_SIDE])
    monkeypatch.setattr(day2.remote, "run", lambda *a, **kw: pytest.fail("asked per call"))
    node = web3.node("lvs-a")
    session = day2.remote.Session(node, Reach(Path("kh")))
    try:
        assert json.loads(session.ask("config")) == {"cluster": {}, "holds": []}
        assert session.ask("apply", "x" * 5000).strip() == "5000"
        with pytest.raises(day2.remote.RemoteError, match="`appliance apply` exited 1: appliance apply: this is lvs-a"):
            session.ask("apply", "bad")
        assert session.ask("config").startswith("{")  # the session goes on after a refusal
    finally:
        assert "systemctl says something" in session.close()


def test_a_node_without_sessions_is_asked_per_call_and_a_dead_one_is_an_error(web3, monkeypatch):
    import sys
    said = {"old": "usage: appliance [-h] COMMAND\nappliance: error: argument COMMAND: invalid choice: 'session'",
            "down": "ssh: connect to host 172.20.40.11 port 22: Connection refused"}
    which = {}
    monkeypatch.setattr(day2.remote, "ssh_argv", lambda node, reach, command: [
        sys.executable, "-c", f"import sys; sys.stderr.write({said[which['node']]!r}); sys.exit(2)"])
    asked = []
    monkeypatch.setattr(day2.remote, "run", lambda node, reach, command, timeout=30, stdin=None:
                        asked.append(command) or "{}")
    which["node"] = "old"
    session = day2.remote.Session(web3.node("lvs-a"), Reach(Path("kh")))
    assert session.ask("config") == "{}" and session.ask("apply", "{}") == "{}"
    assert asked == [f"{contract.APPLIANCE_CLI} config", f"{contract.APPLIANCE_CLI} apply"]
    which["node"] = "down"
    session = day2.remote.Session(web3.node("lvs-a"), Reach(Path("kh")))
    with pytest.raises(day2.remote.RemoteError, match="session` ended: ssh: connect to host"):
        session.ask("config")
