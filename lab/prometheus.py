"""A real Prometheus (Debian's) in the lab's namespace, scraping every node with the shipped rules.

    with Prometheus(cluster) as prom:
        prom.wait_for_alert("RealServerQuiesced", timeout=30)
        prom.query('appliance_ha_transitions_total{instance="lvs-b"}')

It listens on the client's address inside the namespace only; `up` forwards it to 127.0.0.1 for
a browser. The profile's [metrics] scrapers must include the client's address: the lab's
profile gets that from Cluster.with_operator's sibling, Cluster.with_monitoring.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse

from lab import wait
from lab.paths import ROOT

RULES = ROOT / "monitoring" / "alerts.yml"
PORT = 9090
# seconds: scrape and rule evaluation interval (the suite waits in multiples of it). A TCG guest
# answers a scrape in about a second; at 2 s, with four VMs on two host cores, scrapes overlapped
SCRAPE = 5.0


def config(cluster) -> str:
    """prometheus.yml: every node's node_exporter as job "appliance" (instance = node name),
    the real servers' Apache exporter as job "apache", the shipped rules."""
    m = cluster.spec.metrics

    def targets(nodes, port: int) -> str:
        return "".join(f"      - targets: ['{n.address}:{port}']\n        labels: {{instance: {n.name}, "
                       f"role: {n.role}}}\n" for n in nodes)
    return (f"global:\n  scrape_interval: {SCRAPE:g}s\n  evaluation_interval: {SCRAPE:g}s\n"
            f"  scrape_timeout: {SCRAPE:g}s\nrule_files: ['{RULES}']\nscrape_configs:\n"
            f"  - job_name: appliance\n    static_configs:\n{targets(cluster.spec.nodes, m.port)}"
            f"  - job_name: apache\n    static_configs:\n{targets(cluster.spec.real_servers, m.apache_port)}")


class Prometheus:
    def __init__(self, cluster):
        self.cluster = cluster
        self.dir = cluster.workdir / "prometheus"
        self.address: str = cluster.segment.client_address  # inside the lab's namespace
        self.url = f"http://{self.address}:{PORT}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        if shutil.which("prometheus") is None:
            raise FileNotFoundError("prometheus is not installed: `python -m builder host-setup --tests`")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "prometheus.yml").write_text(config(self.cluster))
        self.log = open(self.dir / "prometheus.log", "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.cluster.netns, "prometheus",
             f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address={self.address}:{PORT}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait.until(self._ready, 60, "Prometheus to answer")
        try:
            wait.until(self.all_up, 120, "every exporter to answer Prometheus' scrapes", interval=SCRAPE)
        except wait.Timeout as e:
            raise wait.Timeout(f"{e}: {self.target_errors()}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def _get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        out = subprocess.run(["ip", "netns", "exec", self.cluster.netns, "curl", "-sf", "--max-time", "5", url],
                             capture_output=True, text=True, check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def _ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise wait.Abort(f"prometheus exited: {(self.dir / 'prometheus.log').read_text()[-2000:]}")
        return bool(self._get("/api/v1/status/buildinfo"))

    def query(self, expr: str) -> list[dict]:
        """An instant query's samples ({"metric": labels, "value": [t, "v"]})."""
        return self._get("/api/v1/query", query=expr).get("data", {}).get("result", [])

    def value(self, expr: str) -> float | None:
        found = self.query(expr)
        return float(found[0]["value"][1]) if found else None

    def firing(self, name: str) -> list[dict]:
        """The labels of each firing alert called `name`."""
        alerts = self._get("/api/v1/alerts").get("data", {}).get("alerts", [])
        return [a["labels"] for a in alerts if a["labels"].get("alertname") == name and a["state"] == "firing"]

    def wait_for_alert(self, name: str, timeout: float, **labels: str) -> tuple[dict, float]:
        """The first firing `name` whose labels include `labels`, and the seconds it took."""
        started = time.monotonic()
        found = wait.until(lambda: next((a for a in self.firing(name) if labels.items() <= a.items()), None),
                           timeout, f"alert {name} {labels or ''} to fire", interval=0.5)
        return found, time.monotonic() - started

    def wait_for_quiet(self, name: str, timeout: float) -> float:
        started = time.monotonic()
        wait.until(lambda: not self.firing(name), timeout, f"alert {name} to clear", interval=0.5)
        return time.monotonic() - started

    @property
    def expected(self) -> int:
        """node_exporter on every node, Apache's on every real server."""
        return len(self.cluster.spec.nodes) + len(self.cluster.spec.real_servers)

    def _targets(self) -> list[dict]:
        """Prometheus' own view of what it scrapes (one request)."""
        return self._get("/api/v1/targets").get("data", {}).get("activeTargets", [])

    def all_up(self) -> bool:
        """Every exporter there and its last scrape healthy."""
        active = self._targets()
        return len(active) == self.expected and all(t["health"] == "up" for t in active)

    def target_errors(self) -> str:
        return "; ".join(f"{t['scrapeUrl']}: {t['health']} {t['lastError']} ({t['lastScrapeDuration']:.2f} s)"
                         for t in self._targets() if t["health"] != "up")
