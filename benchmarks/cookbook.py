"""The cookbook's stages against what a user would otherwise write, side by side in one run.

Each pattern maps one of ``amorsize_flows.examples.cookbook``'s functions over its items; each
round runs every way once, in turn (reversed every other round):

- ``loop``: a plain loop; estimators at their defaults (HistGradientBoosting's OpenMP threads
  take every CPU by default);
- ``loop n_jobs=-1``: the loop, the estimator on every CPU (for estimators with ``n_jobs``);
- ``joblib n_jobs=-1``: ``joblib.Parallel(n_jobs=-1)`` over the items;
- ``Pool().map``: ``multiprocessing.Pool()`` over the items;
- ``execute``: ``amorsize_flows.execute`` over the items, dry run included.

Time-series CV runs last and without ``Pool().map``: its gradient boosting starts OpenMP threads
in this process, and a ``Pool()`` forked after them hung in this benchmark's first run.
Bayesian search is left out: its batches are maps like the grid's, and its trials differ from one
way to the next, so no two ways do the same work.

Usage (from the repository root)::

    python -m benchmarks.cookbook                  # 6 rounds (not yet timed to the end here)
    python -m benchmarks.cookbook --rounds 9 --output DIR
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.model_selection import ParameterGrid, StratifiedKFold, TimeSeriesSplit
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

import amorsize_flows as amz
from amorsize_flows.examples.cookbook import (
    audio,
    cross_validation,
    ensembles,
    images,
    inference,
    search,
)

from .command_line import DEFAULT_OUTPUT, run_benchmark
from .paired import median_interval, paired_ratios

__all__ = ["main"]

DEFAULT_ROUNDS = 6
# float32 features differ in their last bits between processes (vectorised sums), not beyond.
FLOAT_TOLERANCE = 1e-5
BAR = 1.05  # execute / the best peer at most this: as fast, within what rounds vary by


@dataclass(frozen=True)
class Pattern:
    name: str
    description: str
    func: Callable[[Any], Any]
    items: list[Any]
    every_cpu: Callable[[Any], Any] | None = None  # the same call, its estimator on every CPU
    # False where the loop has started OpenMP threads (HistGradientBoosting): Pool() forked after
    # them and hung in the first run of this benchmark, so it is left out and the table says so.
    forks_safely: bool = True


def _patterns(folder: Path) -> list[Pattern]:
    x, y = load_digits(return_X_y=True)
    series_x, series_y = cross_validation.lagged_series(40_000)
    wide_x, wide_y = make_classification(20_000, 20, n_informative=10, random_state=0)
    forest = RandomForestClassifier(200, random_state=0)
    fit_fold = functools.partial(cross_validation.fit_fold, x=x, y=y)
    predictor = RandomForestClassifier(100, random_state=0).fit(wide_x[:5_000], wide_y[:5_000])
    predictor_every_cpu = RandomForestClassifier(100, random_state=0, n_jobs=-1).fit(
        wide_x[:5_000], wide_y[:5_000]
    )
    batches = [wide_x[start : start + 1_000] for start in range(0, 100_000, 1_000)]
    grid = {"C": [0.3, 1.0, 3.0, 10.0], "gamma": [0.003, 0.01]}
    return [
        Pattern(
            "images",
            "HOG of 1,000 JPEG tiles of real photographs",
            images.hog_features,
            images.write_tiles(folder / "images", 1_000),
        ),
        Pattern(
            "audio",
            "MFCCs of 1,000 one-second WAV clips",
            audio.mfcc_features,
            audio.write_clips(folder / "audio", 1_000),
        ),
        Pattern(
            "k-fold CV",
            "5 folds of a 200-tree forest on digits",
            functools.partial(fit_fold, estimator=forest),
            list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)),
            every_cpu=functools.partial(
                fit_fold, estimator=RandomForestClassifier(200, random_state=0, n_jobs=-1)
            ),
        ),
        Pattern(
            "grid search",
            "8 SVC points, 3-fold CV each, on digits",
            functools.partial(search.cv_score, estimator=SVC(), x=x, y=y),
            list(ParameterGrid(grid)),
        ),
        Pattern(
            "ensemble",
            "8 bootstrap decision trees on 20,000 x 20",
            functools.partial(
                ensembles.fit_member, estimator=DecisionTreeClassifier(), x=wide_x, y=wide_y
            ),
            list(range(8)),
        ),
        Pattern(
            "batch inference",
            "a 100-tree forest predicts 100 batches of 1,000 rows",
            functools.partial(inference.predict_batch, model=predictor),
            batches,
            every_cpu=functools.partial(inference.predict_batch, model=predictor_every_cpu),
        ),
        Pattern(
            "time-series CV",
            "5 forward splits, gradient boosting on 40,000 lagged rows",
            functools.partial(
                cross_validation.fit_fold,
                estimator=HistGradientBoostingRegressor(random_state=0),
                x=series_x,
                y=series_y,
            ),
            list(TimeSeriesSplit(5).split(series_x)),
            forks_safely=False,
        ),
    ]


def _ways(pattern: Pattern) -> dict[str, Callable[[], list[Any]]]:
    func, items = pattern.func, pattern.items

    def pool_map() -> list[Any]:
        with multiprocessing.Pool() as pool:
            return pool.map(func, items)

    ways: dict[str, Callable[[], list[Any]]] = {"loop": lambda: [func(item) for item in items]}
    if pattern.every_cpu is not None:
        every_cpu = pattern.every_cpu
        ways["loop n_jobs=-1"] = lambda: [every_cpu(item) for item in items]
    ways["joblib n_jobs=-1"] = lambda: joblib.Parallel(n_jobs=-1)(
        joblib.delayed(func)(item) for item in items
    )
    if pattern.forks_safely:
        ways["Pool().map"] = pool_map
    ways["execute"] = lambda: amz.execute(func, items)
    return ways


def _same(results: list[Any], reference: list[Any]) -> bool:
    """Whether two ways gave the same results (models compared by what they predict)."""

    def comparable(value: Any) -> Any:
        return value.tree_.value if hasattr(value, "tree_") else value

    return len(results) == len(reference) and all(
        np.allclose(comparable(a), comparable(b), atol=FLOAT_TOLERANCE)
        for a, b in zip(results, reference, strict=True)
    )


def _measure(rounds: int) -> str:
    with tempfile.TemporaryDirectory(prefix="amorsize-cookbook-") as folder:
        patterns = _patterns(Path(folder))
        table = [_measure_pattern(pattern, rounds) for pattern in patterns]
    _plot(table)
    return _report(table, rounds)


def _measure_pattern(
    pattern: Pattern, rounds: int
) -> tuple[Pattern, dict[str, list[float]], amz.Plan]:
    ways = _ways(pattern)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    reference = None
    for number in range(rounds):
        for name in list(ways) if number % 2 == 0 else list(reversed(ways)):
            started = time.perf_counter()
            results = ways[name]()
            seconds[name].append(time.perf_counter() - started)
            reference = reference if reference is not None else results
            assert _same(results, reference), f"{pattern.name}: {name} gave other results"
    return pattern, seconds, amz.optimize(pattern.func, pattern.items)


def _verdict(seconds: dict[str, list[float]]) -> tuple[str, str]:
    peers = [name for name in seconds if name != "execute"]
    best = min(peers, key=lambda name: statistics.median(seconds[name]))
    ratio = median_interval(paired_ratios(seconds["execute"], seconds[best]))
    return best, f"{ratio.text()} ({ratio.verdict(BAR)})"


def _report(table: list[tuple[Pattern, dict[str, list[float]], amz.Plan]], rounds: int) -> str:
    names = ["loop", "loop n_jobs=-1", "joblib n_jobs=-1", "Pool().map", "execute"]
    lines = [
        "# The cookbook's stages against a loop, n_jobs=-1, joblib and Pool",
        "",
        f"`python -m benchmarks.cookbook --rounds {rounds}` on {os.cpu_count()} CPUs: median "
        "seconds per way; execute / the best peer, round by round, with its interval and whether "
        f'it is at most {BAR} ("noise": the interval reaches the other side).',
        "",
        "| pattern | " + " | ".join(names) + " | best peer | execute / best | execute's plan |",
        "|---|" + "---|" * (len(names) + 3),
    ]
    for pattern, seconds, plan in table:
        cells = [
            f"{statistics.median(seconds[name]):.2f}" if name in seconds else "-" for name in names
        ]
        best, ratio = _verdict(seconds)
        lines.append(
            f"| {pattern.name}: {pattern.description} | "
            + " | ".join(cells)
            + f" | {best} | {ratio} | {plan.summary()} |"
        )
    lines += ["", "![seconds per way, per pattern, relative to the loop](cookbook.png)"]
    return "\n".join(lines) + "\n"


def _plot(table: list[tuple[Pattern, dict[str, list[float]], amz.Plan]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["loop n_jobs=-1", "joblib n_jobs=-1", "Pool().map", "execute"]
    figure, axes = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        speedups = [
            statistics.median(seconds["loop"]) / statistics.median(seconds[name])
            if name in seconds
            else 0.0
            for _, seconds, _ in table
        ]
        positions = [index + offset * width for index in range(len(table))]
        axes.bar(positions, speedups, width, label=name)
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks([index + 0.3 for index in range(len(table))])
    axes.set_xticklabels([pattern.name for pattern, _, _ in table], rotation=15)
    axes.set_ylabel("speedup over the plain loop (median)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(DEFAULT_OUTPUT / "cookbook.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(__doc__, "cookbook.md", _measure, rounds=DEFAULT_ROUNDS, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
