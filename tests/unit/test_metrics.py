"""The HA state as Prometheus metrics (firstboot/metrics.py), and the shipped alert rules only
asking for metrics that something exports."""
from __future__ import annotations

import re

from firstboot import metrics
from tests.conftest import ROOT


def test_a_sample_is_written_in_the_exposition_format_with_every_declared_metric():
    text = metrics.text(metrics.Sample("MASTER", True, {"10.1.0.100": True}, transitions=3,
                                       sync=("master", "backup"), connections=7))
    assert 'appliance_vip_held{vip="10.1.0.100"} 1' in text
    assert 'appliance_ha_state{state="MASTER"} 1' in text
    assert 'appliance_sync_daemon_running{mode="master"} 1' in text and "appliance_sync_connections 7" in text
    assert "# TYPE appliance_ha_transitions_total counter" in text and "appliance_ha_transitions_total 3" in text
    declared = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    assert declared == set(metrics.METRICS)


def test_a_standby_without_the_master_daemon_says_so():
    text = metrics.text(metrics.Sample("BACKUP", True, {"10.1.0.100": False}, sync=("backup",), peer_heard=False))
    assert 'appliance_vip_held{vip="10.1.0.100"} 0' in text
    assert 'appliance_sync_daemon_running{mode="master"} 0' in text and "appliance_peer_heard 0" in text


def test_the_alert_rules_ask_only_for_metrics_the_nodes_export():
    rules = (ROOT / "monitoring/alerts.yml").read_text()
    wanted = set(re.findall(r"\bappliance_\w+", rules))
    assert wanted and wanted <= set(metrics.METRICS), wanted - set(metrics.METRICS)
    tests = (ROOT / "monitoring/alerts.test.yml").read_text()
    for alert in re.findall(r"- alert: (\w+)", rules):  # a firing and a quiet case each
        assert re.search(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels", tests), alert
        assert f"alertname: {alert}, exp_alerts: []" in tests, alert


class Out:
    def __init__(self, stdout="", returncode=0):
        self.stdout, self.returncode = stdout, returncode


def test_the_collector_counts_transitions_and_reads_the_slow_facts_now_and_then(monkeypatch):
    asked = []
    monkeypatch.setattr(metrics, "sync_threads", lambda: ["backup"])

    def run(argv):
        asked.append(argv[0])
        if argv[0] == "cl_status":
            return Out("dead\n")
        return Out("WARN: Late heartbeat: Node lvs-b: interval 3100 ms\n" * 2)
    info = {"stack": "heartbeat", "peer": "lvs-b", "vips": ["10.1.0.100"]}
    c = metrics.Collector(info, run, lambda: True)
    first = c.sample("all", True, ["10.1.0.100"], 0, False)
    assert first.vips == {"10.1.0.100": True} and first.sync == ("backup",) and not first.peer_heard
    assert c.peer_heard_at is None  # `appliance status`: never heard
    assert first.late_heartbeats == 2 and first.transitions == 0
    for state in ("none", "none", "all", "all"):
        last = c.sample(state, True, [], 1, False)
    assert last.transitions == 2 and last.vips == {"10.1.0.100": False}
    assert asked.count("cl_status") == 1  # the slow facts once in Collector.EVERY probes


def test_a_keepalived_master_asks_the_lan_for_its_peer():
    c = metrics.Collector({"stack": "keepalived", "vips": []}, lambda argv: Out(), lambda: False)
    assert not c.sample("MASTER", True, [], 0, False).peer_heard
    backup = metrics.Collector({"stack": "keepalived", "vips": []}, lambda argv: Out(), lambda: False)
    assert backup.sample("BACKUP", True, [], 0, False).peer_heard
    assert backup.peer_heard_at is not None and c.peer_heard_at is None
