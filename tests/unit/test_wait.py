"""wait.steady: the benchmark's "the cluster has stopped changing" after a split brain."""
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
