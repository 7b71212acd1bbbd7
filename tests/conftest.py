"""Shared pytest set-up: the accelerator probe and the howto's seeds."""
from pathlib import Path

import pytest

from lab.paths import ROOT


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
    seed.write_seeds(cluster, key, out)
    return out
