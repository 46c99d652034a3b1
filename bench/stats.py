"""Small statistics helpers (stdlib only)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def r(value: float, digits: int = 2) -> float | None:
    """Round for JSON; NaN becomes None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def rate_ratio_interval(
    rounds: Sequence[tuple[float, float]],
    base: Sequence[tuple[float, float]],
    confidence: float = 0.90,
    resamples: int = 2000,
) -> tuple[float, float]:
    """How far the machine's swings alone could move a rate ratio: a bootstrap interval.

    ``rounds`` and ``base`` are (requests, seconds) per round, paired by round number
    (round n of every variant ran in the same pass over the variants). Passes are drawn
    with replacement and the ratio of total rates recomputed, so the interval widens
    with the spread between passes, not with the number of requests in them.
    """
    n = min(len(rounds), len(base))
    if n < 2:
        return math.nan, math.nan
    pick = random.Random(0)  # the same figures give the same interval
    ratios = []
    for _ in range(resamples):
        drawn = [pick.randrange(n) for _ in range(n)]
        ok_a = sum(rounds[i][0] for i in drawn)
        s_a = sum(rounds[i][1] for i in drawn)
        ok_b = sum(base[i][0] for i in drawn)
        s_b = sum(base[i][1] for i in drawn)
        if s_a and s_b and ok_b:
            ratios.append((ok_a / s_a) / (ok_b / s_b))
    tail = (1 - confidence) / 2 * 100
    return percentile(ratios, tail), percentile(ratios, 100 - tail)
