"""Deadline-based retries: no fixed sleeps, and a timeout message that says what was awaited."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    pass


class Abort(AssertionError):
    """Raised by a check to stop waiting at once: what it waits for can no longer happen."""


def until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call check until it returns something truthy; raise Timeout naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Abort:
            raise
        except Exception as e:  # noqa: BLE001 - kept and reported on timeout
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def during(check: Callable[[], object], seconds: float, what: str, interval: float = 1) -> None:
    """Assert that check stays truthy for `seconds` (an observation window, not a sleep)."""
    deadline = time.monotonic() + seconds
    while True:
        if not check():
            raise AssertionError(f"{what}: stopped holding after "
                                 f"{seconds - (deadline - time.monotonic()):.0f}s")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)
