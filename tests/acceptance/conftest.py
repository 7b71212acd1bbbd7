"""The cluster of one profile (PROFILE env: any profile, default howto), booted once for the
suite, and the story its ordered steps share."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from builder import contract
from lab import chaos, net, wait
from lab.cluster import Cluster
from lab.machine import Machine
from lab.paths import RESULTS, ROOT
from lab.prometheus import Prometheus

_cluster: Cluster | None = None
_passed: set[int] = set()


@pytest.fixture(scope="session")
def cluster(accel):
    global _cluster
    profile_path = ROOT / os.environ.get("PROFILE", "profiles/howto.toml")
    started = time.monotonic()
    with Cluster(profile_path, RESULTS / "acceptance" / profile_path.stem, accel,
                 netns=net.suite_netns(profile_path.stem)) as c:
        _cluster = c
        print(f"\n{c.spec.name}: cluster of {len(c.vms)} VMs ready in {c.boot_seconds:.0f}s ({accel})")
        yield c
        _cluster = None
    print(f"\nacceptance suite wall time: {time.monotonic() - started:.0f}s")


@pytest.fixture(scope="session")
def prometheus(cluster):
    """A real Prometheus in the lab's namespace, scraping every node with the shipped rules."""
    with Prometheus(cluster) as p:
        yield p


@pytest.fixture(scope="session")
def journals(cluster):
    """The lab's log receiver, started with the cluster: every node's journal arrives there."""
    assert cluster.journals
    return cluster.journals


@dataclass
class Story:
    """What one step leaves for a later one, instead of module globals."""
    crashed: Machine | None = None   # step 6 powers the active director off; step 7 boots it
    hung: Machine | None = None      # step 8 hangs the standby; step 9 revives it
    restarts: int = 0                # the stack's restart count for it before the hang


@pytest.fixture(scope="session")
def story() -> Story:
    return Story()


@pytest.fixture(autouse=True)
def one_vip_holder_after_each_step(request, story):
    """The pair's invariants hold between steps, whatever a step asserted itself: exactly one
    of the running directors holds the VIP, and each one's stack answers its own status
    interface (a hung VRRP process once held the VIP beside its peer for 16 minutes while its
    state file said MASTER). A step that leaves a director down (crashed, hung) names it in
    the story; the pair gets the failover's time limit to settle. A stack its watchdog still
    counts as starting (a reboot, a restart) is waited out first: a restarted keepalived whose
    timers ran late under TCG took the VIP back 14 s after step 14 had seen one holder."""
    yield
    if _cluster is None or not request.node.get_closest_marker("step"):
        return
    cluster = _cluster
    down = frozenset(m.name for m in (story.crashed, story.hung) if m is not None)
    up = [d for d in cluster.directors if d.name not in down]
    try:
        cluster.wait_stacks_started(up, contract.HAWATCH_GRACE + 30)
        wait.until(lambda: chaos.one_holder_answering(cluster, down), cluster.spec.failover.takeover_limit + 30,
                   "one VIP holder, every stack answering")
    except wait.Timeout:
        pytest.fail("after this step, not one VIP holder with every stack answering:\n"
                    + cluster.pair_state() + "\n" + cluster.director_journals(), pytrace=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "step(n, after=()): the scenario's place in the story, "
                            "and the steps whose outcome it builds on (skipped if they failed)")


def pytest_collection_modifyitems(items):
    """Run the steps in the order their numbers say, whatever the file order."""
    steps = [i for i in items if i.get_closest_marker("step")]
    numbers = [i.get_closest_marker("step").args[0] for i in steps]
    assert len(set(numbers)) == len(numbers), f"two steps share a number: {sorted(numbers)}"
    ordered = iter(sorted(steps, key=lambda i: i.get_closest_marker("step").args[0]))
    items[:] = [next(ordered) if i.get_closest_marker("step") else i for i in items]


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("step")
    if marker:
        missing = [n for n in marker.kwargs.get("after", ()) if n not in _passed]
        if missing:
            pytest.skip(f"builds on step(s) {missing}, which did not pass")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Record passed steps; on failure, show each node's last console lines and the
    directors' journals."""
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("step")
    if marker and report.when == "call" and report.passed:
        _passed.add(marker.args[0])
    if report.failed and _cluster is not None:
        report.sections.append(("the pair: VIPs held, stacks answering, watchdogs", _cluster.pair_state()))
        report.sections.append(("node consoles (full logs in test-results/acceptance/)",
                                _cluster.console_tails(15)))
        report.sections.append(("directors: heartbeat and ldirectord journals, IPVS table",
                                _cluster.director_journals()))
