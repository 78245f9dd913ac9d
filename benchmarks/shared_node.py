"""Four CPU-bound maps started together on one node: each planning alone, against the lease.

Four fresh processes each run ``amz.execute`` over 400 calls of 5 ms of pure-Python CPU (the core
benchmark's ``cpu`` shape), all started at once, as four tasks of one Celery worker or four
Prefect task runs are. ``alone`` sets ``AMORSIZE_SHARE_NODE=0``: each map plans for every CPU of
the node, as before the lease. ``lease`` shares the node's worker slots. The two alternate round
by round; each round reports the wall time from the first start to the last end, and the most
worker processes alive at once (sampled every 10 ms), with its median over the rounds.

Usage (from the repository root)::

    python -m benchmarks.shared_node                 # 5 rounds of each: about 1 minute on 2 cores
    python -m benchmarks.shared_node --rounds 9 --output DIR
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from .command_line import run_benchmark
from .paired import median_interval, paired_ratios

__all__ = ["main"]

MAPS = 4
DEFAULT_ROUNDS = 5
SAMPLE_SECONDS = 0.01
ROOT = Path(__file__).resolve().parent.parent
MAP = """
import amorsize_flows as amz
from benchmarks.workloads import SHAPES
shape = SHAPES["cpu"]
assert len(amz.execute(shape.func, shape.build())) == shape.n_items
"""
WAYS = {"alone": "0", "lease": "1"}
CALIBRATE = "from amorsize_flows.measure.calibration import get_calibration; get_calibration()"


def _round(share: str) -> tuple[float, int]:
    """Wall seconds of four maps started at once, and the most workers alive at one time."""
    with tempfile.TemporaryDirectory(prefix="amorsize-slots-") as slots:
        env = dict(os.environ, AMORSIZE_SHARE_NODE=share, AMORSIZE_RUNTIME_DIR=slots)
        started = time.perf_counter()
        maps = [
            subprocess.Popen([sys.executable, "-c", MAP], cwd=ROOT, env=env) for _ in range(MAPS)
        ]
        most = 0
        while any(process.poll() is None for process in maps):
            most = max(most, sum(_children(process.pid) for process in maps))
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - started
    if any(process.returncode for process in maps):
        raise RuntimeError(f"a map failed: exit codes {[p.returncode for p in maps]}")
    return seconds, most


def _children(pid: int) -> int:
    try:
        return len(psutil.Process(pid).children())
    except psutil.NoSuchProcess:
        return 0


def _report(results: dict[str, list[tuple[float, int]]], rounds: int) -> str:
    seconds = {way: [s for s, _ in runs] for way, runs in results.items()}
    workers = {way: [w for _, w in runs] for way, runs in results.items()}
    ratio = median_interval(paired_ratios(seconds["lease"], seconds["alone"]))
    lines = [
        "# Four CPU-bound maps started together",
        "",
        f"`python -m benchmarks.shared_node --rounds {rounds}` on {os.cpu_count()} CPUs: four fresh "
        "processes each map 400 calls of 5 ms of pure-Python CPU, started at once.",
        "",
        "| way | median wall s | wall s per round | most workers alive at once |",
        "|---|---|---|---|",
    ]
    for way in WAYS:
        per_round = ", ".join(f"{s:.2f}" for s in seconds[way])
        lines.append(
            f"| {way} | {statistics.median(seconds[way]):.2f} | {per_round} | "
            f"{max(workers[way])} (median {statistics.median(workers[way]):.0f}) |"
        )
    lines += ["", f"lease / alone, round by round: {ratio.text()}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(__doc__, "shared_node.md", _measure, rounds=DEFAULT_ROUNDS, argv=argv)


def _measure(rounds: int) -> str:
    # Calibrated before any round: four maps would otherwise wait for one to measure the machine.
    subprocess.run([sys.executable, "-c", CALIBRATE], cwd=ROOT, check=True)
    results: dict[str, list[tuple[float, int]]] = {way: [] for way in WAYS}
    for number in range(rounds):
        order = list(WAYS) if number % 2 == 0 else list(reversed(WAYS))
        for way in order:
            results[way].append(_round(WAYS[way]))
    return _report(results, rounds)


if __name__ == "__main__":
    sys.exit(main())
