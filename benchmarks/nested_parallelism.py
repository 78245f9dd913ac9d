"""Five-fold cross-validation of a 100-tree random forest: few heavy calls whose own work can
run in parallel, against what a user would otherwise write.

Data: ``make_classification(10_000, 20)``. Each round runs every way once, in turn:

- ``loop``: the folds in a plain loop, the forest on one thread (its default, ``n_jobs=None``);
- ``loop n_jobs=-1``: the plain loop, the forest on every CPU (its own joblib threads);
- ``joblib n_jobs=-1``: ``joblib.Parallel(n_jobs=-1)`` over the folds;
- ``Pool().map``: ``multiprocessing.Pool()`` over the folds;
- ``execute``: ``amorsize_flows.execute`` over the folds (dry run included), forest left at
  ``n_jobs=None`` so that the plan sets its inner budget.

Usage (from the repository root)::

    python -m benchmarks.nested_parallelism              # 5 rounds: about 4 minutes on 2 cores
    python -m benchmarks.nested_parallelism --rounds 9 --output DIR
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold

import amorsize_flows as amz

from .command_line import run_benchmark
from .paired import median_interval, paired_ratios

__all__ = ["fit_fold", "main"]

DEFAULT_ROUNDS = 5
FOLDS = 5
TREES = 100


def _data() -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    x, y = make_classification(10_000, 20, n_informative=10, random_state=0)
    return x, y, list(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(x, y))


def fit_fold(
    fold: tuple[np.ndarray, np.ndarray], *, x: np.ndarray, y: np.ndarray, n_jobs: int | None = None
) -> float:
    """Fit the forest on a fold's training rows; its accuracy on the fold's test rows."""
    train, test = fold
    forest = RandomForestClassifier(TREES, n_jobs=n_jobs, random_state=0).fit(x[train], y[train])
    return float(forest.score(x[test], y[test]))


def _ways(x: np.ndarray, y: np.ndarray) -> dict[str, Callable[[list[Any]], list[float]]]:
    fit = functools.partial(fit_fold, x=x, y=y)
    every_cpu = functools.partial(fit_fold, x=x, y=y, n_jobs=-1)

    def pool_map(folds: list[Any]) -> list[float]:
        with multiprocessing.Pool() as pool:
            return pool.map(fit, folds)

    return {
        "loop": lambda folds: [fit(fold) for fold in folds],
        "loop n_jobs=-1": lambda folds: [every_cpu(fold) for fold in folds],
        "joblib n_jobs=-1": lambda folds: joblib.Parallel(n_jobs=-1)(
            joblib.delayed(fit)(fold) for fold in folds
        ),
        "Pool().map": pool_map,
        "execute": lambda folds: amz.execute(fit, folds),
    }


def _measure(rounds: int) -> str:
    x, y, folds = _data()
    ways = _ways(x, y)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    scores: dict[str, list[float]] = {}
    for number in range(rounds):
        names = list(ways) if number % 2 == 0 else list(reversed(ways))
        for name in names:
            started = time.perf_counter()
            scores[name] = ways[name](folds)
            seconds[name].append(time.perf_counter() - started)
    plan = amz.optimize(functools.partial(fit_fold, x=x, y=y), folds)
    reference = scores["loop"]
    assert all(np.allclose(result, reference) for result in scores.values()), scores
    return _report(seconds, rounds, plan)


def _report(seconds: dict[str, list[float]], rounds: int, plan: amz.Plan) -> str:
    peers = [name for name in seconds if name != "execute"]
    best = min(peers, key=lambda name: statistics.median(seconds[name]))
    ratio = median_interval(paired_ratios(seconds["execute"], seconds[best]))
    lines = [
        "# Five-fold cross-validation of a 100-tree random forest",
        "",
        f"`python -m benchmarks.nested_parallelism --rounds {rounds}` on {os.cpu_count()} CPUs: "
        "10,000 x 20 samples; every way once per round, in turn.",
        "",
        "| way | median s | s per round |",
        "|---|---|---|",
    ]
    for name, runs in seconds.items():
        per_round = ", ".join(f"{value:.2f}" for value in runs)
        lines.append(f"| {name} | {statistics.median(runs):.2f} | {per_round} |")
    lines += [
        "",
        f"execute / {best} (the best peer), round by round: {ratio.text()}; at most 1.05: "
        f"{ratio.verdict(1.05)}.",
        "",
        f"execute's plan: {plan.summary()}. {plan.reason}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        __doc__, "nested_parallelism.md", _measure, rounds=DEFAULT_ROUNDS, argv=argv
    )


if __name__ == "__main__":
    sys.exit(main())
