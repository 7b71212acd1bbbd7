"""builder/plan.py: what apply would change, live or only with --reboot, for each kind of change."""
from __future__ import annotations

import copy
import tomllib

from builder import plan, profile
from tests.conftest import ROOT


def data(name="redundant") -> dict:
    return tomllib.loads((ROOT / f"profiles/{name}.toml").read_text())


def changes(edit, name="redundant"):
    old = data(name)
    new = copy.deepcopy(old)
    edit(new)
    a, b = profile.parse(old), profile.parse(new)
    return plan.diff(a, b), a, b


def test_an_unchanged_profile_plans_nothing():
    assert changes(lambda d: None)[0] == []


def test_a_real_server_added_is_one_live_change_not_one_per_setting():
    def add(d):
        d["real_servers"].append({"name": "app3", "address": "172.20.40.23", "weight": 2})
    [c], _, _ = changes(add)
    assert c.key == "real_servers.app3" and c.old is None and c.live and str(c) == "real_servers.app3: added"


def test_a_removed_real_server_is_live_and_drained_first():
    [c], a, b = changes(lambda d: d["real_servers"].pop(0), "three-web")
    assert c.key.startswith("real_servers.") and c.new is None and c.live
    assert plan.drained(a, b) == [a.real_servers[0].name] == [c.key.split(".")[1]]


def test_weights_checks_and_the_scheduler_change_live():
    def edit(d):
        d["real_servers"][1]["weight"] = 5
        d["services"][0]["checkinterval"] = 4
        d["services"][0]["scheduler"] = "wlc"
    found, _, _ = changes(edit)
    assert {c.key for c in found} == {"real_servers.app2.weight", "services.tcp/80.checkinterval",
                                      "services.tcp/80.scheduler"}
    assert all(c.live for c in found) and plan.refusal(found) is None


def test_identity_and_stack_changes_are_refused_naming_each_with_its_reason():
    def edit(d):
        d["vip"] = "172.20.40.101"
        d["heartbeat"]["deadtime"] = 3
        d["directors"][0]["address"] = "172.20.40.13"
        d["real_servers"][0]["address"] = "172.20.40.31"
    found, _, _ = changes(edit)
    refused = plan.refusal(found)
    assert refused is not None and not any(c.live for c in found)
    for words in ("vip: IPv4Address('172.20.40.100') -> IPv4Address('172.20.40.101')",
                  "heartbeat.deadtime", "directors.lvs-a.address", "real_servers.app1:",
                  "remove it and add it again", "apply --reboot"):
        assert words in refused, words


def test_a_mixed_change_is_refused_as_a_whole_but_names_only_the_refused_part():
    def edit(d):
        d["real_servers"][1]["weight"] = 5
        d["stack"] = "keepalived"
        d["vrrp"] = {}
        del d["heartbeat"]
    found, _, _ = changes(edit)
    refused = plan.refusal(found)
    assert refused and "stack" in refused and "app2.weight" not in refused
