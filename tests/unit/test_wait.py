"""wait: deadlines instead of sleeps; steady states after a split brain; what stops a wait at once."""
import itertools
import time

import pytest

from lab import wait


def test_steady_returns_only_after_the_state_held_for_the_whole_period():
    calls = itertools.count()
    started = time.monotonic()
    wait.steady(lambda: next(calls) >= 3, seconds=0.2, timeout=5, what="x", interval=0.02)
    assert time.monotonic() - started >= 0.2 + 3 * 0.02


def test_a_flapping_state_is_not_steady():
    flips = itertools.cycle([True, True, False])
    with pytest.raises(wait.Timeout, match="waiting for the pair settled"):
        wait.steady(lambda: next(flips), seconds=0.2, timeout=0.5, what="the pair settled", interval=0.02)


def test_a_check_that_raises_counts_as_not_holding():
    def broken():
        raise OSError("guest agent gone")
    with pytest.raises(wait.Timeout):
        wait.steady(broken, seconds=0.05, timeout=0.3, what="x", interval=0.02)


def test_a_typo_in_a_check_fails_at_once_instead_of_burning_the_timeout():
    started = time.monotonic()
    with pytest.raises(AttributeError):
        wait.until(lambda: None.ok, timeout=30, what="x", interval=0.01)  # type: ignore[attr-defined]
    with pytest.raises(NameError):
        wait.steady(lambda: undefined_name, seconds=1, timeout=30, what="x", interval=0.01)  # type: ignore[name-defined]  # noqa: F821
    assert time.monotonic() - started < 1


def test_a_failed_guest_command_inside_a_wait_is_retried():
    from lab.machine import CommandFailed
    tries = itertools.count()

    def flaky():
        if next(tries) < 2:
            raise CommandFailed("lvs-a: `ipvsadm -L -n` exited 1")
        return "ok"
    assert wait.until(flaky, timeout=5, what="x", interval=0.01) == "ok"


def test_an_abort_stops_the_wait_at_once():
    from lab.machine import BootFailed
    with pytest.raises(BootFailed):
        wait.until(lambda: (_ for _ in ()).throw(BootFailed("APPLIANCE NOT CONFIGURED")), timeout=30, what="x")


def test_a_suite_at_idle_priority_waits_longer_and_says_how_long(monkeypatch):
    monkeypatch.setattr(wait, "SCALE", 3.0)
    started = time.monotonic()
    with pytest.raises(wait.Timeout, match="after 0s"):  # 0.15 s of waiting, printed rounded
        wait.until(lambda: None, timeout=0.05, what="x", interval=0.01)
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("raw", ["0.5", "fast", ""])
def test_a_timeout_scale_below_one_or_not_a_number_is_refused_naming_the_variable(raw):
    from builder.errors import LabError
    with pytest.raises(LabError, match="APPLIANCE_TIMEOUT_SCALE"):
        wait._scale(raw)
    assert wait._scale("4") == 4.0
