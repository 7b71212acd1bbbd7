"""The four-VM cluster, booted once for the suite (PROFILE env: any profile, default howto)."""
from __future__ import annotations

import os
import signal
import time

import pytest

from harness.paths import RESULTS, ROOT
from harness.cluster import Cluster

_cluster: Cluster | None = None


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")  # tear the cluster down as on Ctrl-C


@pytest.fixture(scope="session")
def cluster(accel):
    global _cluster
    signal.signal(signal.SIGTERM, _sigterm)
    profile_path = ROOT / os.environ.get("PROFILE", "profiles/howto.toml")
    started = time.monotonic()
    with Cluster(profile_path, RESULTS / "acceptance" / profile_path.stem, accel) as c:
        _cluster = c
        print(f"\ncluster of {len(c.vms)} VMs ready in {c.boot_seconds:.0f}s ({accel})")
        yield c
        _cluster = None
    print(f"\nacceptance suite wall time: {time.monotonic() - started:.0f}s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, show each node's last console lines, prefixed with its name."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _cluster is not None:
        report.sections.append(("node consoles (full logs in test-results/acceptance/)",
                                _cluster.console_tails()))
        report.sections.append(("directors: heartbeat and ldirectord journals, IPVS table",
                                _cluster.director_journals()))
