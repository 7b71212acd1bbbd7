"""Shared pytest set-up: the accelerator probe and the howto's seeds; SIGTERM tears down."""
import signal
from pathlib import Path

import pytest

from lab.paths import ROOT


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")  # tear every VM, namespace and server down as on Ctrl-C


def pytest_sessionstart(session):
    """A CI's or make's SIGTERM ends a suite the way Ctrl-C does: its fixtures' teardown runs
    (a boot suite killed without it once left four QEMUs running)."""
    signal.signal(signal.SIGTERM, _sigterm)


@pytest.fixture(scope="session")
def accel() -> str:
    """kvm if a probe boot works under it, else tcg (printed, so runs say which)."""
    from lab import accel as probe
    chosen = probe.probe()
    print(f"\nQEMU accelerator: {chosen}")
    return chosen


@pytest.fixture(scope="session")
def seeds(tmp_path_factory) -> Path:
    """Seed ISOs for howto.toml, written with the builder (secret in a temp dir)."""
    from builder import profile, secret, seed
    out = tmp_path_factory.mktemp("seeds")
    cluster = profile.load(ROOT / "profiles" / "howto.toml")
    key = secret.load_or_create(cluster, ROOT / "profiles" / "howto.toml", out / "secrets")
    seed.write_seeds(cluster, seed.Keys(key), out)
    return out
