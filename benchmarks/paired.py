"""Ratios of two configurations' times taken round by round, and how sure their median is.

The host here drifts: the same loop ran 1.3x slower from one minute to the next. Both benchmarks
run every configuration once per round, so a ratio of two times taken in the same round cancels
the drift between rounds that a ratio of medians keeps. The median of those ratios comes with a
distribution-free interval (order statistics of a sign test): where it straddles a bar, the runs
cannot tell whether the bar holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "median_interval", "paired_ratios"]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A median and the interval holding the true median with CONFIDENCE (nan: too few runs)."""

    low: float
    median: float
    high: float
    count: int

    def verdict(self, limit: float) -> str:
        """Whether the median is at most ``limit``: "yes" or "NO", with "(noise)" where the
        interval reaches the other side of it."""
        holds = self.median <= limit
        decided = self.high <= limit if holds else self.low > limit
        return ("yes" if holds else "NO") + ("" if decided else " (noise)")

    def text(self) -> str:
        """The median with its interval, as ``1.03 [0.97, 1.09]``."""
        if not math.isfinite(self.median):
            return "-"
        if math.isnan(self.low):
            return f"{self.median:.2f} (n={self.count})"
        return f"{self.median:.2f} [{self.low:.2f}, {self.high:.2f}]"


def paired_ratios(
    numerators: Sequence[float | None], denominators: Sequence[float | None]
) -> list[float]:
    """numerator / denominator of each round where both ran (None: a failed run)."""
    return [
        top / bottom
        for top, bottom in zip(numerators, denominators, strict=True)
        if top is not None and bottom is not None and bottom > 0
    ]


def median_interval(values: Sequence[float]) -> Interval:
    """The median of ``values`` and a CONFIDENCE interval for the true median.

    The k-th smallest and k-th largest values bound the median with probability
    1 - 2 P(Binomial(n, 1/2) < k), whatever the distribution; k is the largest that keeps that at
    CONFIDENCE or more. Six values are the fewest that allow one (the smallest and the largest:
    97%); with fewer, the bounds are nan.
    """
    ordered = sorted(values)
    count = len(ordered)
    if not count:
        return Interval(math.nan, math.inf, math.nan, 0)
    middle = count // 2
    median = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    outside, k = 0.0, 0  # P(Binomial(n, 1/2) < k + 1), for k + 1 rank from each end
    while True:
        outside += math.comb(count, k) / 2**count
        if 2 * outside > 1 - CONFIDENCE:
            break
        k += 1
    if k == 0:
        return Interval(math.nan, median, math.nan, count)
    return Interval(ordered[k - 1], median, ordered[count - k], count)
