"""What the rest of a map's calls will cost, read from the serial batches measured so far.

Items sorted by size (documents by length, images by resolution) make calls that grow along the
input: the first batches then say little about the last. Where the batches rise steadily, the
rest is read off the line they draw; anywhere else the latest batch stands for the rest, since
random variation averages out and extrapolating noise would only mislead.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ..measure.profile import Batch

# A rise is steady when each batch's calls cost at least this many times the batch before's...
RISE_FACTOR = 1.5
# ...and the line through the earlier batches predicts the latest within this factor. Random
# costs that rose by chance (a slow call landing in a small batch) rarely pass both tests.
AGREEMENT_FACTOR = 1.5
# Two points always lie on a line: the agreement test needs a third.
MIN_BATCHES = 3
# A trend raises the latest batch's cost at most this many times: random costs pass both tests
# now and then, and their line can overshoot many times. (docs/decisions.md#trends)
MAX_GROWTH = 8.0


class RisingBatches:
    """The batches of a serial run since the rise last broke: a map of hours keeps a few."""

    def __init__(self, first: Batch) -> None:
        self.batches = [first]

    def add(self, batch: Batch) -> None:
        # A batch that did not rise enough ends any steady rise the ones before it could form.
        if batch.seconds_per_item < RISE_FACTOR * self.batches[-1].seconds_per_item:
            self.batches.clear()
        self.batches.append(batch)

    def rest_seconds_per_item(self, stop: int) -> float:
        return rest_seconds_per_item(self.batches, stop)

    def rises_steadily(self) -> bool:
        return rises_steadily(self.batches)


def rest_seconds_per_item(batches: Sequence[Batch], stop: int) -> float:
    """The mean seconds per call expected from the end of the last batch up to item ``stop``.

    The line through every batch, where they rise steadily (between 1 and MAX_GROWTH times the
    latest batch); otherwise the latest batch's seconds per call.
    """
    if not batches:
        raise ValueError("rest_seconds_per_item needs at least one measured batch")
    latest = batches[-1]
    if not rises_steadily(batches):
        return latest.seconds_per_item
    slope, intercept = _line(batches)
    start = latest.first + latest.items
    middle = (start + stop - 1) / 2
    rate = latest.seconds_per_item
    return min(max(rate, intercept + slope * middle), MAX_GROWTH * rate)


def rises_steadily(batches: Sequence[Batch]) -> bool:
    """Whether the batches' costs climb along the input, each step on the line of the ones before."""
    if len(batches) < MIN_BATCHES:
        return False
    rates = [batch.seconds_per_item for batch in batches]
    if any(rate <= 0 for rate in rates):
        return False
    if any(later < RISE_FACTOR * earlier for earlier, later in itertools.pairwise(rates)):
        return False
    slope, intercept = _line(batches[:-1])
    expected = intercept + slope * batches[-1].middle
    if expected <= 0:
        return False
    return 1 / AGREEMENT_FACTOR <= rates[-1] / expected <= AGREEMENT_FACTOR


def _line(batches: Sequence[Batch]) -> tuple[float, float]:
    """Least-squares slope and intercept of seconds per call against the batches' middles."""
    import statistics  # only once serial batches rise (docs/decisions.md#import-cost)

    fit = statistics.linear_regression(
        [batch.middle for batch in batches], [batch.seconds_per_item for batch in batches]
    )
    return fit.slope, fit.intercept
