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


def test_late_heartbeats_are_counted_from_where_the_last_read_ended():
    """Each read asks the journal only for heartbeat's lines after the last cursor and adds
    what it finds, instead of searching the whole boot's journal again."""
    asked, journal = [], iter([
        "info: Link lvs-b:eth0 up.\nWARN: Late heartbeat: Node lvs-b: interval 1100 ms\n-- cursor: s=1;i=5\n",
        "WARN: Late heartbeat: Node lvs-b: interval 1300 ms\nCRIT: Late heartbeat: Node lvs-b: interval 1800 ms"
        "\n-- cursor: s=1;i=9\n",
        "",  # nothing new: no cursor line, the last one stays
        "WARN: Late heartbeat: Node lvs-b: interval 1050 ms\n-- cursor: s=1;i=12\n"])

    def run(argv):
        if argv[0] == "journalctl":
            asked.append(next((a for a in argv if a.startswith("--after-cursor=")), None))
            return Out(next(journal))
        return Out("active\n")
    c = metrics.Collector({"stack": "heartbeat", "peer": "lvs-b", "vips": []}, run, lambda: True)
    counts = []
    for _ in range(4 * metrics.Collector.EVERY):
        counts.append(c.sample("all", True, [], 0, False).late_heartbeats)
    assert counts[::metrics.Collector.EVERY] == [1, 3, 3, 4]
    assert asked == [None, "--after-cursor=s=1;i=5", "--after-cursor=s=1;i=9", "--after-cursor=s=1;i=9"]
