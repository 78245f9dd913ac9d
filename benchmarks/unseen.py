"""Workloads of the core benchmark's shapes that the planner was never tuned on.

The issue's bar holds "on every benchmark shape, and on other workloads of these shapes that you
will not see". These are such workloads, written after the planner, to find where it does not:
cheap calls on strings and dicts, 50 µs pure-Python calls, GIL-free hashing of 64 KB blobs, calls
sorted by cost from 6 ms down, 5 ms waits, and small numpy matrix products. Each child imports
numpy first, as the task of an ML pipeline does (a caller's idle BLAS pool once cost every forked
worker a spinning thread). Each (workload, configuration) runs in a fresh process, in a shuffled
order per round; the median is reported with the plan `execute` chose, and execute's time over
the best peer's in the same round, whose median is judged against the bar (see ``paired``).

Run: ``python -m benchmarks.unseen [--rounds 5]`` (about 4 minutes); writes
``benchmarks/results/unseen.md``.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .core_report import PEER_FACTOR, PEER_SLACK_SECONDS
from .fresh_runs import parse_rounds, run_pairs
from .paired import median_interval, paired_ratios
from .preload import preload_amorsize
from .workloads import ITERATIONS_PER_MS, spin

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results" / "unseen.md"
CONFIGS = ("loop", "pool", "joblib", "execute")
PEERS = ("loop", "pool", "joblib")


def shout(word: str) -> str:
    """Cheap string work."""
    return word.upper() + "!"


def record_of(i: int) -> dict[str, Any]:
    """Cheap dict building."""
    return {"id": i, "square": i * i, "name": f"item-{i}"}


def sha256_hex(blob: bytes) -> str:
    """Hashing that releases the GIL, tens of microseconds a call."""
    return hashlib.sha256(blob).hexdigest()


def sleep_5ms(x: int) -> int:
    """Waiting."""
    time.sleep(0.005)
    return x


def matmul_sum(seed: int) -> float:
    """A small BLAS product (300 x 300)."""
    import numpy as np

    matrix = np.random.default_rng(seed).standard_normal((300, 300))
    return float((matrix @ matrix).sum())


WORKLOADS: dict[str, tuple[str, Callable[[Any], Any], Callable[[], list[Any]]]] = {
    "strings": ("s.upper() + '!' over 200k words", shout, lambda: [f"w{i}" for i in range(200_000)]),
    "dicts": ("a 3-key dict per int, 100k ints", record_of, lambda: list(range(100_000))),
    "medium": (
        "about 50 µs of pure-Python CPU x 20k", spin, lambda: [ITERATIONS_PER_MS // 20] * 20_000
    ),
    "sha256": (
        "sha256 of 64 KB (releases the GIL) x 2000", sha256_hex,
        lambda: [bytes([i % 256]) * (64 << 10) for i in range(2_000)],
    ),
    "descending": (
        "CPU sorted by size, 6 ms down to nothing, x 300", spin,
        lambda: [1 + round((300 - i) * 0.02 * ITERATIONS_PER_MS) for i in range(300)],
    ),
    "waits": ("sleep 5 ms x 200", sleep_5ms, lambda: list(range(200))),
    "matmul": ("numpy 300x300 product x 120", matmul_sum, lambda: list(range(120))),
}  # fmt: skip


def run_one(workload: str, config: str) -> dict[str, Any]:
    """Time one configuration of one workload in this process."""
    import multiprocessing

    import numpy  # noqa: F401  (the caller of an ML pipeline has it loaded)
    from joblib import Parallel, delayed

    from amorsize_flows import run

    preload_amorsize()  # the imports of every configuration happen before the clock

    _, func, build = WORKLOADS[workload]
    items = build()
    outcome = None
    started = time.perf_counter()
    if config == "loop":
        results = [func(item) for item in items]
    elif config == "pool":
        with multiprocessing.Pool() as pool:
            results = pool.map(func, items)
    elif config == "joblib":
        results = Parallel(n_jobs=-1)(delayed(func)(item) for item in items)
    elif config == "execute":
        outcome = run(func, items)
        results = outcome.results
    else:
        raise ValueError(f"config must be one of {', '.join(CONFIGS)}, got {config!r}")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "n_results": len(results), "plan": _plan_of(outcome)}


def _plan_of(outcome: Any) -> str:
    if outcome is None:
        return ""
    plan = outcome.plan
    replanned = " (re-planned)" if plan.reason.startswith("Re-planned") else ""
    return f"{plan.backend} x{plan.n_jobs} c{plan.chunksize}{replanned}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every (workload, configuration) in fresh processes, shuffled; write the medians."""
    description = __doc__.splitlines()[0]
    names = ("WORKLOAD", "CONFIG")
    rounds = parse_rounds(description, argv, default=5, names=names, run_one=run_one)
    if rounds is None:
        return 0
    pairs = [(workload, config) for workload in WORKLOADS for config in CONFIGS]
    measured = run_pairs("benchmarks.unseen", pairs, rounds, verbose=True)
    seconds = {pair: [run["seconds"] for run in runs] for pair, runs in measured.items()}
    plans = {
        workload: [run["plan"] for run in measured[workload, "execute"]] for workload in WORKLOADS
    }
    RESULTS.write_text(_report(seconds, plans, rounds))
    print(RESULTS.read_text())
    return 0


def _report(
    seconds: dict[tuple[str, str], list[float]], plans: dict[str, list[str]], rounds: int
) -> str:
    lines = [
        "# Workloads the planner was not tuned on",
        "",
        f"Generated by `python -m benchmarks.unseen --rounds {rounds}`: median seconds of the map "
        "in a fresh process that imported numpy first; the bar is execute <= "
        f"{PEER_FACTOR} x the best peer (loop, Pool().map, joblib) + "
        f"{PEER_SLACK_SECONDS * 1e3:.0f} ms, judged round by round: the median of execute's "
        "time over the bar's, with a 95% interval (a verdict the interval reaches across is "
        "marked noise). The paired column is execute over the peer alone.",
        "",
        "| workload | loop s | Pool s | joblib s | execute s | exec / best peer | "
        "paired (95%) | bar | plan (most chosen) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, (description, _, _) in WORKLOADS.items():
        medians = {config: statistics.median(seconds[workload, config]) for config in CONFIGS}
        peer = min(PEERS, key=lambda config: medians[config])
        ratio = medians["execute"] / medians[peer]
        paired = median_interval(
            paired_ratios(seconds[workload, "execute"], seconds[workload, peer])
        )
        bar = median_interval(
            paired_ratios(
                seconds[workload, "execute"],
                [PEER_FACTOR * s + PEER_SLACK_SECONDS for s in seconds[workload, peer]],
            )
        )
        chosen = statistics.mode(plans[workload]) if plans[workload] else ""
        lines.append(
            f"| {workload}: {description} | {medians['loop']:.3f} | {medians['pool']:.3f} | "
            f"{medians['joblib']:.3f} | {medians['execute']:.3f} | {ratio:.2f} ({peer}) | "
            f"{paired.text()} | {bar.verdict(1.0)} | {chosen} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
