"""The cost of a map's remaining calls, read from the serial batches measured so far."""

from __future__ import annotations

import random

import pytest

from amorsize_flows.decide.trend import (
    MAX_GROWTH,
    RisingBatches,
    rest_seconds_per_item,
    rises_steadily,
)
from amorsize_flows.measure.profile import Batch


def measured(costs: list[float], sizes: list[int]) -> list[Batch]:
    """The batches a serial run of ``costs`` in batches of ``sizes`` would report."""
    batches, first = [], 0
    for size in sizes:
        chunk = costs[first : first + size]
        batches.append(Batch(first, size, sum(chunk) / size))
        first += size
    return batches


def test_calls_growing_along_the_input_continue_on_their_line() -> None:
    # 300 items sorted by size, 0 to 6 ms: after 66 items the latest batch says 0.83 ms a call,
    # the rest really averages 3.7 ms.
    costs = [i * 2e-5 for i in range(300)]
    batches = measured(costs, [3, 3, 12, 48])
    truth = sum(costs[66:]) / len(costs[66:])
    assert batches[-1].seconds_per_item < truth / 4
    assert rest_seconds_per_item(batches, 300) == pytest.approx(truth, rel=0.05)


def test_a_trend_raises_the_latest_cost_at_most_max_growth_times() -> None:
    # After 18 items of the same input the rest costs 14 times the latest batch: a line through
    # three small batches is trusted only so far.
    costs = [i * 2e-5 for i in range(300)]
    batches = measured(costs, [3, 3, 12])
    assert rest_seconds_per_item(batches, 300) == MAX_GROWTH * batches[-1].seconds_per_item


def test_a_rise_that_does_not_hold_its_line_is_not_extrapolated() -> None:
    # Cheap calls, then a sudden block of slow ones: it rose, but not along a line.
    batches = [Batch(0, 3, 1e-4), Batch(3, 3, 2e-4), Batch(6, 12, 5e-3)]
    assert not rises_steadily(batches)
    assert rest_seconds_per_item(batches, 300) == 5e-3


@pytest.mark.parametrize(
    "rates",
    [[1e-3, 4e-3], [1e-3, 1.2e-3, 1.4e-3, 1.7e-3], [1e-3, 3e-3, 2.9e-3], [0.0, 1e-3, 2e-3]],
    ids=["two-batches", "gentle-rise", "levels-off", "free-calls"],
)
def test_without_a_steady_rise_the_latest_batch_stands_for_the_rest(rates: list[float]) -> None:
    sizes = [4**k for k in range(len(rates))]
    firsts = [sum(sizes[:k]) for k in range(len(rates))]
    batches = [Batch(f, s, r) for f, s, r in zip(firsts, sizes, rates, strict=True)]
    assert rest_seconds_per_item(batches, 1_000) == rates[-1]


def test_random_costs_rarely_look_like_a_trend() -> None:
    # Skewed costs in random order (lognormal, as the skewed benchmark shape), batches as a
    # serial run makes them: a chance rise is rarely taken for a trend, and never multiplies the
    # estimate beyond MAX_GROWTH.
    rng = random.Random(7)
    extrapolated = 0
    for _ in range(1_000):
        costs = [rng.lognormvariate(0, 1) * 1e-3 for _ in range(300)]
        batches = measured(costs, [3, 3, 12])
        latest = batches[-1].seconds_per_item
        rest = rest_seconds_per_item(batches, 300)
        assert latest <= rest <= MAX_GROWTH * latest
        extrapolated += rest != latest
    assert extrapolated < 1_000 * 0.05


def test_a_trend_never_predicts_less_than_the_latest_batch() -> None:
    batches = [Batch(0, 1, 1e-3), Batch(1, 1, 2e-3), Batch(2, 1, 3.1e-3)]
    assert rest_seconds_per_item(batches, 3) >= 3.1e-3


def test_no_batches_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least one measured batch"):
        rest_seconds_per_item([], 10)


def test_a_long_serial_run_keeps_only_the_batches_since_the_rise_last_broke() -> None:
    # Equal batches for an hour would otherwise pile up; a rise that starts after them counts.
    history = RisingBatches(Batch(0, 10, 1e-3))
    for index in range(1, 1_000):
        history.add(Batch(index * 10, 10, 1e-3))
    assert len(history.batches) == 1
    costs = [i * 2e-5 for i in range(300)]
    for batch in measured(costs, [3, 3, 12, 48]):
        history.add(Batch(10_000 + batch.first, batch.items, batch.seconds_per_item))
    assert len(history.batches) == 4
    truth = sum(costs[66:]) / len(costs[66:])
    assert history.rest_seconds_per_item(10_300) == pytest.approx(truth, rel=0.05)
