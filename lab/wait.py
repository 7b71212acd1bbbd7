"""Deadline-based retries: no fixed sleeps, and a timeout message that says what was awaited."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from builder.errors import LabError

T = TypeVar("T")


def _scale(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise LabError(f"APPLIANCE_TIMEOUT_SCALE={raw!r}: give a number of at least 1 (e.g. 4), or unset it")
    return value


# A suite run on a slower or busier host than this project's (e.g. beside another suite) can
# have its waits stretched by this factor: a timeout detects a hang, and a starved machine is
# slow, not hung.
SCALE = _scale(os.environ.get("APPLIANCE_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * SCALE


class Timeout(LabError, AssertionError):
    """What a wait was for did not come in time; the message names it and the last error."""


class Abort(LabError, AssertionError):
    """Raised by a check to stop waiting at once: what it waits for can no longer happen."""


# A check that raises one of these has a bug, not a bad moment: waiting longer cannot help, and
# the whole timeout would hide the typo. Anything else a check raises (a guest command that
# failed, an agent that does not answer yet) is kept and retried.
PROGRAMMING_ERRORS = (NameError, TypeError, AttributeError, ImportError, SyntaxError)


def until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call check until it returns something truthy; raise Timeout naming `what` after timeout."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (Abort, *PROGRAMMING_ERRORS):
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


def steady(check: Callable[[], object], seconds: float, timeout: float, what: str,
           interval: float = 1) -> None:
    """Wait until check has held for `seconds` in a row: a state that has stopped changing,
    not one passed through on the way somewhere else. A check that raises counts as false."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    since: float | None = None
    while True:
        try:
            ok = bool(check())
        except PROGRAMMING_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - an unanswerable check is not a steady state
            ok = False
        now = time.monotonic()
        since = (since or now) if ok else None
        if since is not None and now - since >= seconds:
            return
        if now >= deadline:
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what} to hold for {seconds:.0f}s")
        time.sleep(interval)
