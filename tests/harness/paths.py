"""Where things are: the repo, the built images, and the git-ignored test results."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results"


def image(role: str) -> Path:
    path = ROOT / f"{role}.img"
    if not path.exists():
        pytest.fail(f"{path.name} is missing: run `make {path.name}` (make test builds it)")
    return path
