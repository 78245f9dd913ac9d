"""The benchmarks' round-by-round verdicts: a bar is failed or passed only where the runs can tell."""

from __future__ import annotations

import math
import random

from benchmarks.core_report import Runs, Summary, summarize
from benchmarks.paired import median_interval, paired_ratios
from benchmarks.workloads import SHAPES


def test_a_failed_run_drops_its_round_from_the_pairs() -> None:
    assert paired_ratios([2.0, None, 3.0, 4.0], [1.0, 1.0, None, 2.0]) == [2.0, 2.0]


def test_nine_rounds_bound_the_median_by_their_second_smallest_and_second_largest() -> None:
    interval = median_interval([9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0])
    assert (interval.low, interval.median, interval.high) == (2.0, 5.0, 8.0)


def test_fewer_than_six_rounds_give_a_median_without_an_interval() -> None:
    interval = median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert interval.median == 3.0
    assert math.isnan(interval.low) and math.isnan(interval.high)
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).low == 1.0


def test_the_interval_holds_the_true_median_at_least_95_times_in_100() -> None:
    rng = random.Random(7)
    trials = 2000
    covered = 0
    for _ in range(trials):
        interval = median_interval([rng.expovariate(1.0) for _ in range(9)])
        covered += interval.low <= math.log(2) <= interval.high
    assert covered / trials >= 0.94  # 96.1% exactly for nine rounds; 2000 trials wobble by ~0.5%


def test_a_verdict_is_marked_noise_only_where_the_interval_crosses_the_bar() -> None:
    clear_pass = median_interval([1.00, 1.01, 0.99, 1.02, 1.00, 0.98, 1.01, 1.03, 0.97])
    clear_fail = median_interval([1.10, 1.12, 1.08, 1.20, 1.11, 1.09, 1.13, 1.14, 1.10])
    straddling = median_interval([1.06, 1.06, 1.06, 1.06, 1.06, 1.00, 1.00, 1.00, 1.00])
    assert clear_pass.verdict(1.05) == "yes"
    assert clear_fail.verdict(1.05) == "NO"
    assert straddling.verdict(1.05) == "NO (noise)"
    assert straddling.verdict(1.07) == "yes"


def _summary(shape: str, loop: list[float], execute: list[float]) -> Summary:
    runs = {
        name: Runs(name, seconds=list(times), by_round=list(times), plans=[None] * len(times))
        for name, times in (("loop", loop), ("execute", execute), ("processes-x2-c8", execute))
    }
    runs["execute"].plans = [{"estimated_speedup": 1.7}] * len(execute)
    return summarize(SHAPES[shape], runs)


def test_the_cpu_shape_asks_execute_for_its_least_speedup_round_by_round() -> None:
    loop = [3.6, 3.7, 3.5, 3.6, 3.8, 3.6, 3.4, 3.6, 3.7]
    reached = _summary("cpu", loop, [seconds / 1.9 for seconds in loop])
    assert reached.speedup_ok and reached.speedup_verdict == "yes"
    # The loop drifts between rounds; execute's time does not follow it: 1.64 to 1.73 by round.
    short = _summary("cpu", loop, [2.2, 2.2, 2.1, 2.1, 2.2, 2.2, 2.0, 2.1, 2.2])
    assert short.speedup_ok is False and short.speedup_verdict == "**NO**"
    assert any("median 1.68 < 1.8" in line for line in short.failures())
    assert not short.bar_holds


def test_shapes_that_set_no_least_speedup_are_not_judged_on_one() -> None:
    loop = [1.0] * 9
    summary = _summary("skewed", loop, [2.0] * 9)
    assert summary.speedup_ok is None and summary.speedup_verdict == "n/a"
