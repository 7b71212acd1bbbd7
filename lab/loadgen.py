"""Steady, bounded HTTP load on one URL; one JSON line per request.

Runs inside the test network namespace (`ip netns exec ... python3 loadgen.py`): fixed rate,
fixed duration, short per-request timeout, so it can never run away. Each line holds the
request's start (seconds since the epoch), latency, HTTP status (0 = no HTTP answer), which
server answered (from the page's data-server attribute) and, for a failure, what it was
(`ConnectionRefusedError`, `TimeoutError`, `HTTP 503`...): a refusal is a real server that is
down, a timeout a director that is.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

SERVER_RE = re.compile(rb'data-server="([^"]+)"')
MAX_RATE, MAX_DURATION = 200, 1800


@dataclass(frozen=True)
class Request:
    """One request of the load: one JSON line of this script's output."""
    t: float                  # when it was sent (seconds since the epoch)
    latency: float            # seconds to its answer or its failure
    status: int               # HTTP status; 0: no HTTP answer
    server: str | None        # the real server (or `<director>-fallback`) that answered
    error: str | None = None  # what the failure was: ConnectionRefusedError, TimeoutError, HTTP 503

    @property
    def ok(self) -> bool:
        return self.status == 200

    @classmethod
    def from_line(cls, line: str) -> Request:
        return cls(**json.loads(line))


def fetch(url: str, timeout: float) -> dict:
    start = time.time()
    status, server, error = 0, None, None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            status = r.status
            m = SERVER_RE.search(body)
            server = m.group(1).decode() if m else None
    except urllib.error.HTTPError as e:
        status, error = e.code, f"HTTP {e.code}"
    except Exception as e:  # noqa: BLE001 - any failure is a failed request
        error = type(getattr(e, "reason", e)).__name__  # URLError wraps the socket's error
    return {"t": start, "latency": time.time() - start, "status": status, "server": server, "error": error}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("url")
    p.add_argument("--rate", type=float, default=20, help="requests per second (max 200)")
    p.add_argument("--duration", type=float, default=30, help="seconds (max 1800)")
    p.add_argument("--timeout", type=float, default=1.0, help="per-request timeout, seconds")
    args = p.parse_args(argv)
    if not 0 < args.rate <= MAX_RATE or not 0 < args.duration <= MAX_DURATION:
        p.error(f"rate must be in (0, {MAX_RATE}] and duration in (0, {MAX_DURATION}]")
    lock = threading.Lock()

    def record(future: concurrent.futures.Future) -> None:
        with lock:
            print(json.dumps(future.result()), flush=True)

    total = int(args.rate * args.duration)
    workers = int(args.rate * args.timeout) + 4
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for i in range(total):
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(fetch, args.url, args.timeout).add_done_callback(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
