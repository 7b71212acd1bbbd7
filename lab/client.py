"""The howto's client inside the lab's namespace: HTTP requests, a browser, slow downloads.

    vip = Client(segment, spec.vip, 80)           # or an IPv6 VIP: http://[2001:db8:40::100]/
    vip.get("/").server          # which real server answered
    t = vip.downloads("/blob.txt", 4); ...; t.finish(timeout=300)
"""
from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder import contract, render
from builder.errors import LabError
from lab import net

SERVER_RE = re.compile(r'data-server="([^"]+)"')


class BrowseError(LabError, AssertionError):
    """The browser printed no page (a test failure, with what the browser and curl saw)."""


@dataclass(frozen=True)
class Response:
    status: int          # 0: no HTTP answer (timeout, refused)
    body: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def server(self) -> str | None:
        """Which real server (or `<director>-fallback`) produced the page."""
        match = SERVER_RE.search(self.body)
        return match.group(1) if match else None


class Client:
    """The howto's browser: HTTP from the client address inside the namespace; HTTPS on
    contract.TLS_PORT, trusting only the cluster's certificate (`cacert`, builder/tls.py)."""

    def __init__(self, segment: net.Segment, host: IPv4Address | IPv6Address, port: int = 80,
                 cacert: Path | None = None):
        self.segment, self.host, self.port, self.cacert = segment, host, port, cacert
        self.tls = port == contract.TLS_PORT
        if self.tls and cacert is None:
            raise LabError(f"{self.url()}: an HTTPS client needs the cluster's certificate (cacert)")

    def url(self, path: str = "/") -> str:
        scheme, default = ("https", contract.TLS_PORT) if self.tls else ("http", 80)
        return f"{scheme}://{render.bracketed(self.host)}{'' if self.port == default else f':{self.port}'}{path}"

    def curl_tls(self) -> list[str]:
        """curl's arguments to verify the real servers against the cluster's certificate."""
        return ["--cacert", str(self.cacert)] if self.tls else []

    def get(self, path: str = "/", timeout: float = 3) -> Response:
        started = time.monotonic()
        proc = self.segment.run("curl", "-s", "-m", str(timeout), *self.curl_tls(), "-o", "-", "-w", "\n%{http_code}",
                                self.url(path), check=False, timeout=timeout + 5)
        body, _, code = proc.stdout.rpartition("\n")
        return Response(int(code) if code.isdigit() else 0, body, time.monotonic() - started)

    def servers(self, count: int, path: str = "/") -> list[str | None]:
        """Who answered each of `count` requests in turn (None: the request failed)."""
        return [r.server if r.ok else None for r in (self.get(path) for _ in range(count))]

    def downloads(self, path: str, count: int, rate: str = "40k") -> Transfers:
        """`count` slow downloads of `path` through the VIP, running in the background. The
        client's receive buffer is kept small (autotuning would take a whole file in within a
        second), so bytes stay in flight and the server depends on ACKs that pass the director."""
        self.segment.run("sysctl", "-q", "-w", "net.ipv4.tcp_rmem=4096 8192 16384")
        return Transfers(self.segment, self.url(path), count, rate, self.curl_tls())

    def chromium_tls(self) -> list[str]:
        """chromium trusts the cluster's certificate by its key's hash (it reads no CA file)."""
        if not self.tls:
            return []
        cert = x509.load_pem_x509_certificate(Path(str(self.cacert)).read_bytes())
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        return [f"--ignore-certificate-errors-spki-list={base64.b64encode(hashlib.sha256(spki).digest()).decode()}"]

    def browse(self, path: str = "/", timeout: float = 90) -> str:
        """Load the page in headless chromium, run inside the namespace; returns the DOM. A
        profile of its own each time (one kept in /tmp outlived runs and was shared with CI's),
        and a browser that printed no DOM says what it said and what curl got instead."""
        profile = tempfile.mkdtemp(prefix=f"{self.segment.netns}-chromium.")
        try:
            proc = self.segment.run(
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--timeout={int(timeout * 1000)}", *self.chromium_tls(), "--dump-dom", self.url(path),
                timeout=timeout + 30)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        if not proc.stdout.strip():
            said = "\n".join(proc.stderr.strip().splitlines()[-8:])
            curl = self.get(path, timeout=5)
            raise BrowseError(f"chromium printed no page for {self.url(path)} (exit {proc.returncode}); "
                              f"curl then got {curl.status or 'no answer'} from {curl.server or '-'}; "
                              f"chromium said:\n{said}")
        return proc.stdout


class Transfers:
    """Downloads in flight: curl processes in the namespace, each writing to a file of its own."""

    def __init__(self, segment: net.Segment, url: str, count: int, rate: str, curl_args: list[str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="lab-transfers."))
        self.procs = [subprocess.Popen(
            ["ip", "netns", "exec", segment.netns, "curl", "-s", "-S", *(curl_args or []), "--limit-rate", rate,
             "--max-time", "600", "-o", str(self.dir / f"{i}.out"), "-w", "%{http_code}", url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(count)]

    def bytes_so_far(self) -> list[int]:
        return [p.stat().st_size if p.exists() else 0 for p in (self.dir / f"{i}.out" for i in range(len(self.procs)))]

    def finish(self, timeout: float) -> list[tuple[int, str, bytes]]:
        """(curl's exit code, what it said, the bytes received) per download."""
        deadline = time.monotonic() + timeout
        results = []
        try:
            for i, proc in enumerate(self.procs):
                try:
                    out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, err = proc.communicate()
                    err += f" (still running after {timeout:.0f} s)"
                results.append((proc.returncode, (out + " " + err).strip(), (self.dir / f"{i}.out").read_bytes()
                                if (self.dir / f"{i}.out").exists() else b""))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        return results
