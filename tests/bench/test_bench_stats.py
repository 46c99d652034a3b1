"""The benchmark's interval for a rate ratio: it says how far the host's swings reach."""

from __future__ import annotations

import pytest
from bench.stats import rate_ratio_interval


def test_steady_rounds_give_a_tight_interval_around_the_ratio() -> None:
    base = [(100.0, 1.0)] * 8
    rounds = [(95.0, 1.0)] * 8
    assert rate_ratio_interval(rounds, base) == pytest.approx((0.95, 0.95))


def test_swinging_rounds_widen_it_and_it_holds_the_ratio_of_the_totals() -> None:
    base = [(100.0, 1.0), (60.0, 1.0), (90.0, 1.0), (70.0, 1.0), (100.0, 1.0), (65.0, 1.0)]
    rounds = [(70.0, 1.0), (75.0, 1.0), (95.0, 1.0), (55.0, 1.0), (80.0, 1.0), (75.0, 1.0)]
    low, high = rate_ratio_interval(rounds, base)
    total = (sum(x for x, _ in rounds) / 6) / (sum(x for x, _ in base) / 6)
    assert low < total < high
    assert high - low > 0.1
    assert rate_ratio_interval(rounds, base) == (low, high)  # seeded: the same figures, the same interval


def test_one_round_has_no_interval() -> None:
    low, high = rate_ratio_interval([(90.0, 1.0)], [(100.0, 1.0)])
    assert low != low and high != high  # NaN
