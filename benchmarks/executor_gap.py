"""Does the same function run slower inside one executor's worker than inside another's?

On some hosts ``multiprocessing.Pool().map`` beats every process configuration of ours by a few
percent at equal chunk sizes. This isolates the worker: ONE worker, no contention, the same pure-
Python items (``workloads.burn_5ms``), each timed inside the worker; each executor runs in a fresh
process, alternating, and the median per-item time of each run is reported.

Usage (from the repository root)::

    python -m benchmarks.executor_gap                # 6 rounds, about 40 s
    python -m benchmarks.executor_gap --rounds 12
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from .workloads import burn_5ms

__all__ = ["main"]

EXECUTORS = ("pool", "loky", "executor", "amorsize")
N_ITEMS = 200
CHUNKSIZE = 50


def timed_burn(seed: int) -> float:
    """Seconds one ~5 ms item takes, measured inside the worker."""
    started = time.perf_counter()
    burn_5ms(seed)
    return time.perf_counter() - started


def run_one(executor: str) -> float:
    """The median seconds per item inside one worker of ``executor``."""
    items = list(range(N_ITEMS))
    if executor == "pool":
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(1) as pool:
            seconds = pool.map(timed_burn, items, chunksize=CHUNKSIZE)
    elif executor == "loky":
        import loky
        from loky.backend.context import get_context

        pool_executor = loky.ProcessPoolExecutor(1, context=get_context("fork"))
        seconds = list(pool_executor.map(timed_burn, items, chunksize=CHUNKSIZE))
        pool_executor.shutdown(wait=True)
    elif executor == "executor":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as ppe:
            seconds = list(ppe.map(timed_burn, items, chunksize=CHUNKSIZE))
    elif executor == "amorsize":
        import amorsize_flows as amz

        plan = amz.Plan.fixed("processes", 1, CHUNKSIZE, start_method="fork")
        seconds = amz.execute(timed_burn, items, plan=plan)
    else:
        raise ValueError(f"`executor` must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    return statistics.median(seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Alternate the executors in fresh processes and print each one's per-item medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="runs per executor (default 6)")
    parser.add_argument("--one", choices=EXECUTORS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(run_one(args.one))
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    medians: dict[str, list[float]] = {executor: [] for executor in EXECUTORS}
    for _ in range(args.rounds):
        for executor in EXECUTORS:
            command = [sys.executable, "-m", "benchmarks.executor_gap", "--one", executor]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            medians[executor].append(float(output.strip().splitlines()[-1]))
    reference = statistics.median(medians["pool"])
    print(f"median ms per ~5 ms item inside one worker, {args.rounds} fresh runs each:")
    for executor, values in medians.items():
        middle = statistics.median(values)
        runs = " ".join(f"{value * 1e3:.2f}" for value in values)
        print(
            f"  {executor:9s} {middle * 1e3:6.2f} ({middle / reference - 1:+.1%} vs pool)  [{runs}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
