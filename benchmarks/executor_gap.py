"""Do the same chunks of pure Python run slower in one executor's workers than in another's?

With equal chunks, ``multiprocessing.Pool().map`` beats our process plans by a few percent on some
functions and not on others. This isolates the workers: two of them, the same 300 items in chunks
of 38 (Pool's own choice for 300 items on 2 workers), for three pure-Python functions that stress
the interpreter differently (integer arithmetic, dict updates, float math), on Pool, the standard
ProcessPoolExecutor, loky and our runner, all forking. Each runs in a fresh process that imported
all four, in a shuffled order each round, and the median wall time of the map is reported.
``pool+init`` is Pool with an initializer that only keeps 1000 small objects alive: if it moves
Pool as much as the executors differ, the gap is how the worker's memory happens to be laid out,
not what the executor does.

Usage (from the repository root)::

    python -m benchmarks.executor_gap                # 8 rounds, about 4 minutes
    python -m benchmarks.executor_gap --rounds 12
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from .fresh_runs import parse_rounds, run_pairs
from .workloads import ITERATIONS_PER_MS, spin

__all__ = ["main"]

EXECUTORS = ("pool", "pool+init", "executor", "loky", "amorsize")
N_ITEMS = 300
CHUNKSIZE = 38
# About 3.5 ms per item each, on the reference machine.
ITEM_SIZES = {"integers": int(3.5 * ITERATIONS_PER_MS), "dicts": 30_000, "floats": 36_000}
_KEPT: list[object] = []


def integers(n: int) -> int:
    """Integer arithmetic in a loop (the benchmark's ``spin``)."""
    return spin(n)


def dicts(n: int) -> int:
    """Dict updates with integer keys and values."""
    counts: dict[int, int] = {}
    for i in range(n):
        counts[i % 1021] = counts.get(i % 1021, 0) + i
    return sum(counts.values())


def floats(n: int) -> float:
    """Float math through a C function."""
    total = 0.0
    for i in range(1, n):
        total += math.sin(i) * 0.5 / i
    return total


FUNCTIONS: dict[str, Callable[[int], Any]] = {
    "integers": integers,
    "dicts": dicts,
    "floats": floats,
}


def keep_some_objects() -> None:
    """A Pool initializer that does nothing but allocate: it moves the worker's heap layout."""
    _KEPT.extend(object() for _ in range(1000))


def run_one(executor: str, function: str) -> float:
    """Wall seconds of the map of ``function`` with ``executor``, in this process."""
    func, size = FUNCTIONS[function], ITEM_SIZES[function]
    items = [size + i % 5 for i in range(N_ITEMS)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import loky
    from loky.backend.context import get_context

    # Named imports: the package loads its modules on first use, which must not be timed.
    from amorsize_flows import Plan, execute

    started = time.perf_counter()
    if executor in ("pool", "pool+init"):
        initializer = keep_some_objects if executor == "pool+init" else None
        with multiprocessing.get_context("fork").Pool(2, initializer=initializer) as pool:
            pool.map(func, items, chunksize=CHUNKSIZE)
    elif executor == "executor":
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(2, mp_context=context) as standard_executor:
            list(standard_executor.map(func, items, chunksize=CHUNKSIZE))
    elif executor == "loky":
        pool_executor = loky.ProcessPoolExecutor(2, context=get_context("fork"))
        list(pool_executor.map(func, items, chunksize=CHUNKSIZE))
        pool_executor.shutdown(wait=True)
    elif executor == "amorsize":
        plan = Plan.fixed("processes", 2, CHUNKSIZE, start_method="fork")
        execute(func, items, plan=plan)
    else:
        raise ValueError(f"`executor` must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    """Run every (executor, function) pair in fresh processes, shuffled, and print the medians."""
    description = __doc__.splitlines()[0]
    names = ("EXECUTOR", "FUNCTION")
    rounds = parse_rounds(description, argv, default=8, names=names, run_one=run_one)
    if rounds is None:
        return 0
    pairs = [(executor, function) for function in FUNCTIONS for executor in EXECUTORS]
    seconds = run_pairs("benchmarks.executor_gap", pairs, rounds)
    print(f"median wall s, 2 workers, {N_ITEMS} items in chunks of {CHUNKSIZE}, {rounds} runs:")
    for function in FUNCTIONS:
        reference = statistics.median(seconds["pool", function])
        cells = []
        for executor in EXECUTORS:
            middle = statistics.median(seconds[executor, function])
            cells.append(f"{executor} {middle:.3f} ({middle / reference - 1:+.1%})")
        print(f"  {function:9s} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
