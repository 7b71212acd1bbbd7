"""KVM where a probe boot shows it works, else TCG. `/dev/kvm` existing is not enough: on
nested/paravirtual hosts guest kernels can hang under KVM."""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from builder.image import output_dir

PROBE_SECONDS = 15
# the kernel the director build leaves next to its image: small, and always there after a build
KERNEL = output_dir("director") / "director.vmlinuz"


def probe(kernel: Path = KERNEL) -> str:
    """Boot `kernel` with no root disk under KVM; a panic reached quickly means KVM works."""
    if os.environ.get("APPLIANCE_ACCEL") in ("kvm", "tcg"):
        return os.environ["APPLIANCE_ACCEL"]
    if not Path("/dev/kvm").exists() or not kernel.exists():
        return "tcg"
    with tempfile.TemporaryDirectory() as tmp:
        console = Path(tmp) / "console"
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
             "-accel", "kvm", "-cpu", "host", "-m", "256", "-no-reboot", "-kernel", str(kernel),
             "-append", "console=ttyS0 panic=-1", "-serial", f"file:{console}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + PROBE_SECONDS
        try:
            while time.monotonic() < deadline:
                text = console.read_text(errors="replace") if console.exists() else ""
                if "Kernel panic" in text or "VFS:" in text:
                    return "kvm"
                if proc.poll() is not None and "Kernel panic" not in text:
                    return "tcg"
                time.sleep(0.5)
            return "tcg"
        finally:
            proc.kill()
            proc.wait()
