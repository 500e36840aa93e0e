"""The paired decision rule shared by the trainer's gate and the worker's post-swap guard."""

from __future__ import annotations

import numpy as np
import pytest

from stream.errors import StreamError
from stream.trainer.gate import compare, lower_bound


def test_ties_and_tiny_slices_never_pass() -> None:
    same = np.array([1.0, 0.0, 0.5] * 100)
    assert not compare(same, same).ok  # a tie is no evidence
    assert not compare(np.ones(50), np.zeros(50), min_events=200).ok  # far better, but 50 events
    assert compare(np.ones(200), np.zeros(200), min_events=200).ok


def test_a_few_lucky_hits_are_not_evidence() -> None:
    # What promoted the scrambled candidate: 3 hits vs 1 hit out of 300 held-out events.
    cand, live = np.zeros(300), np.zeros(300)
    cand[[5, 80, 200]] = 1.0
    live[17] = 1.0
    verdict = compare(cand, live)
    assert verdict.diff > 0 and not verdict.ok and verdict.lower < 0


def test_tolerance_has_a_clear_meaning() -> None:
    rng = np.random.default_rng(1)
    live = rng.uniform(0, 1, 1000)
    worse = live - 0.01  # worse by exactly 0.01 on every event
    assert not compare(worse, live).ok
    assert not compare(worse, live, tolerance=0.005).ok  # worse by more than the tolerance
    assert compare(worse, live, tolerance=0.02).ok  # within it
    assert compare(worse, live, tolerance=1.0).ok  # 1.0 lets any candidate through
    with pytest.raises(StreamError):
        compare(worse, live, tolerance=-0.1)


def test_false_promotions_of_equally_good_versions_stay_near_one_minus_confidence() -> None:
    rng = np.random.default_rng(0)
    passed = 0
    trials = 400
    for _ in range(trials):
        a = (rng.uniform(0, 1, 500) < 0.3).astype(float)
        b = (rng.uniform(0, 1, 500) < 0.3).astype(float)
        passed += compare(a, b, confidence=0.95).ok
    assert passed / trials < 0.09  # 5% expected; a rule that promotes ties would be ~50%


def test_lower_bound_of_a_constant_difference_is_the_difference() -> None:
    assert lower_bound(np.full(10, 0.25)) == pytest.approx(0.25)
    assert lower_bound(np.array([])) == float("-inf")
