"""Where a cheap serial map's time goes, next to the plain loop it is judged against.

On the core benchmark's ``cheap`` shape (``x*x+1`` over 300,000 ints: a few tens of milliseconds)
``execute`` plans serially, as it should, and its best peer is the plain loop: the issue's peer bar
allows it 5% more than that loop. This splits the gap in two:

- **the serial loop**: ``execute`` with a fixed serial plan (no dry run, no re-planning) appends
  each result to the one list it returns, as its serial batches do; the plain loop is a list
  comprehension;
- **the planning**: with no plan, from the call to the first serial batch (the dry run's checks and
  probes, the limits, the calibration read, the model), taken from the run's own clocks.

Both run in fresh processes, a shuffled order per round, judged round by round (``paired``). The
loop's cost is also measured in one process, the ways alternating for many rounds (thread CPU
time), which cancels the drift between fresh processes: the runner's loop (``execution.runner.run_plan``
alone) against the comprehension, and the obvious alternative, a comprehension per serial batch
(the sizes ``execution.serial.run_serial`` uses while re-planning may still switch), joined into one list.

Run: ``python -m benchmarks.serial_floor [--rounds 30]`` (about a minute); writes
``benchmarks/results/serial_floor.md``.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .core_report import PEER_FACTOR, PEER_SLACK_SECONDS
from .fresh_runs import parse_rounds, run_pairs
from .paired import median_interval, paired_ratios
from .workloads import SHAPES

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results" / "serial_floor.md"
SHAPE = "cheap"
WAYS = ("loop", "runner", "execute")
IN_PROCESS = "alternating"
IN_PROCESS_ROUNDS = 200


def run_one(way: str, shape_name: str) -> Any:
    """In this fresh process: one map of ``shape_name`` done ``way``; or, for IN_PROCESS, every
    in-process way alternating for IN_PROCESS_ROUNDS rounds."""
    shape = SHAPES[shape_name]
    func, items = shape.func, list(shape.build())
    # Named imports: the package loads its modules on first use, which must not be timed.
    from amorsize_flows import Plan, execute, run

    serial = Plan.fixed("serial")
    if way == IN_PROCESS:
        from amorsize_flows.execution.runner import run_plan

        # How many items the dry run takes, for the batches a comprehension per batch would join.
        sampled = run(func, items).plan.profile["sampled_items"]
        return _alternating(
            lambda: [func(item) for item in items],
            # The loop alone: a list's items run in one stretch, yielded as one list.
            runner=lambda: next(run_plan(serial, func, iter(items))),
            joined=lambda: _joined_batches(func, items, sampled),
        )
    started = time.perf_counter()
    if way == "loop":
        [func(item) for item in items]  # as the core benchmark's loop
        return {"seconds": time.perf_counter() - started}
    if way == "runner":
        execute(func, items, plan=serial)
        return {"seconds": time.perf_counter() - started}
    if way == "execute":
        outcome = run(func, items)
        seconds = time.perf_counter() - started
        if outcome.plan.backend != "serial":
            raise RuntimeError(
                f"execute planned {outcome.plan.summary()}: this measures serial maps"
            )
        stats = outcome._iterator._stats  # the run's own clocks: when its first batch began
        return {"seconds": seconds, "planning": stats.started_at - started}
    raise ValueError(f"`way` must be one of {', '.join((*WAYS, IN_PROCESS))}, got {way!r}")


def _alternating(
    comprehension: Callable[[], object],
    *,
    runner: Callable[[], object],
    joined: Callable[[], object],
) -> dict[str, list[float]]:
    """Thread CPU seconds of each in-process way, round by round, in alternating order."""
    ways: dict[str, Callable[[], object]] = {
        "comprehension": comprehension,
        "runner": runner,
        "comprehension per batch, joined": joined,
    }
    expected = comprehension()
    for name, way in ways.items():  # every way must build the same list, or it measures nothing
        if way() != expected:
            raise RuntimeError(f"{name} built other results than the comprehension")
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    order = list(ways)
    for round_number in range(IN_PROCESS_ROUNDS):
        for name in order if round_number % 2 else reversed(order):
            started = time.thread_time()
            ways[name]()
            seconds[name].append(time.thread_time() - started)
    return seconds


def _joined_batches(func: Callable[[Any], Any], items: list[Any], sampled: int) -> list[Any]:
    """The results as comprehensions of the serial runner's batches would build them, joined
    into one list: the dry run's ``sampled``, batches growing SERIAL_BATCH_GROWTH times while
    the next is under a quarter of the rest (while re-planning may still switch), the rest."""
    from amorsize_flows.execution.serial import SERIAL_BATCH_GROWTH as GROWTH

    rest = iter(items)
    results = [func(item) for item in itertools.islice(rest, sampled)]
    size, left = sampled, len(items) - sampled
    while GROWTH * size < left:
        batch = [func(item) for item in itertools.islice(rest, size)]
        results += batch
        left -= len(batch)
        size *= GROWTH
    results += [func(item) for item in rest]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fresh-process ways and the in-process rounds; print and write the report."""
    description = __doc__.splitlines()[0]
    rounds = parse_rounds(description, argv, default=30, names=("WAY", "SHAPE"), run_one=run_one)
    if rounds is None:
        return 0
    pairs = [(way, SHAPE) for way in WAYS]
    fresh = run_pairs("benchmarks.serial_floor", pairs, rounds)
    alternating = run_pairs("benchmarks.serial_floor", [(IN_PROCESS, SHAPE)], 1)
    text = _report(fresh, alternating[IN_PROCESS, SHAPE][0], rounds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    return 0


def _report(
    fresh: dict[tuple[str, str], list[Any]], alternating: dict[str, list[float]], rounds: int
) -> str:
    seconds = {way: [run["seconds"] for run in fresh[way, SHAPE]] for way in WAYS}
    planning = [run["planning"] for run in fresh["execute", SHAPE]]
    loop = statistics.median(seconds["loop"])
    low, _, high = statistics.quantiles(seconds["loop"], n=4)
    allowed = (PEER_FACTOR - 1) * loop + PEER_SLACK_SECONDS
    lines = [
        "# A cheap serial map against the plain loop",
        "",
        f"`{SHAPE}`: {SHAPES[SHAPE].description}. Generated by "
        f"`python -m benchmarks.serial_floor --rounds {rounds}`; see its docstring.",
        "",
        f"## Fresh processes ({rounds} rounds, shuffled)",
        "",
        "| way | median ms | paired ratio to the loop (95%) |",
        "|---|---|---|",
    ]
    for way in WAYS:
        ratio = median_interval(paired_ratios(seconds[way], seconds["loop"]))
        lines.append(f"| {way} | {statistics.median(seconds[way]) * 1e3:.2f} | {ratio.text()} |")
    lines += [
        "",
        f"`execute`'s planning (call to first serial batch): median "
        f"{statistics.median(planning) * 1e3:.2f} ms, from {min(planning) * 1e3:.2f} to "
        f"{max(planning) * 1e3:.2f}. The peer bar allows {allowed * 1e3:.2f} ms "
        f"({PEER_FACTOR - 1:.0%} of the loop's median + {PEER_SLACK_SECONDS * 1e3:.0f} ms) for the "
        "planning and the loop's cost together.",
        "",
        f"The same loop's own spread across fresh processes: quartiles {low * 1e3:.2f} and "
        f"{high * 1e3:.2f} ms ({high / low:.2f}x), which is why the loop's cost is measured again "
        "below, in one process.",
        "",
        f"## In one process ({IN_PROCESS_ROUNDS} alternating rounds, thread CPU time)",
        "",
        "| way | median ms | paired ratio to the comprehension (95%) |",
        "|---|---|---|",
    ]
    base = alternating["comprehension"]
    for name, values in alternating.items():
        ratio = median_interval(paired_ratios(values, base))
        lines.append(f"| {name} | {statistics.median(values) * 1e3:.2f} | {ratio.text()} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
