"""Where things are: the repo, the built images, and the git-ignored results."""
import os
from pathlib import Path

from builder.contract import IMAGE_OF
from builder.errors import LabError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "test-results"
IMAGES = {role: f"{name}.img" for role, name in IMAGE_OF.items()}


class ImageMissing(LabError, FileNotFoundError):
    """A built image the lab needs is not there; the message says how to build it."""


def results(name: str) -> Path:
    """Where one suite keeps its machines: apart per set of images (APPLIANCE_IMAGES), so that
    two releases' boot suites can run at the same time."""
    images = os.environ.get("APPLIANCE_IMAGES")
    return RESULTS / (f"{name}-{Path(images).name}" if images else name)


def image(role: str) -> Path:
    """The built image for a node role (director, realserver) or image name (webserver)."""
    # APPLIANCE_IMAGES: another directory of images, e.g. build/bookworm (make boot-bookworm)
    path = Path(os.environ.get("APPLIANCE_IMAGES", ROOT)) / IMAGES.get(role, f"{role}.img")
    if not path.exists():
        raise ImageMissing(f"{path.name} is missing from {path.parent}",
                           hint=f"run `make {path.name}` (make test builds it)")
    return path
