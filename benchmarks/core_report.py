"""The core benchmark's verdicts, tables and chart, from the times its children measured.

The bar (from the issue), checked on every shape:

- ``execute <= 1.15 * best fixed + 0.020 s``: the dry run and the model cost little next to the
  best configuration a person could have fixed by hand with our runner;
- ``execute <= 1.05 * best peer + 0.010 s``: never worse than what a user would write without us
  (a plain loop, ``multiprocessing.Pool().map``, ``ProcessPoolExecutor().map``,
  ``joblib.Parallel``); the 10 ms allowance is the house issue's decision
  (docs/decisions.md#the-benchmark-bars);
- ``|estimated - achieved| / achieved <= 25%``, where achieved = loop / execute, on shapes whose
  loop takes at least 0.5 s (below that, start-up noise dominates a ratio of two times);
- ``loop / execute >= 1.8`` on the CPU-bound shape of 5 ms a call (``Shape.min_speedup``).

All but the estimate are judged round by round (``paired``): execute's time over the other's in
the same round, whose median comes with a 95% interval; a verdict whose interval reaches across
the bar is marked as noise. The ratio of the two medians is shown beside it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .paired import Interval, median_interval, paired_ratios
from .workloads import Shape

__all__ = ["Runs", "Summary", "chart", "console", "markdown", "summarize"]

FIXED_FACTOR, FIXED_SLACK_SECONDS = 1.15, 0.020
PEER_FACTOR, PEER_SLACK_SECONDS = 1.05, 0.010
ESTIMATE_TOLERANCE = 0.25
ESTIMATE_MIN_LOOP_SECONDS = 0.5
# The host's noise is read from the loop's runs once there are this many. Where the loop's upper
# quartile exceeds its lower one by more than the peer bar's margin, that bar cannot be told from
# noise (a run at 2cff91f, beside a busy neighbour: 1.06 to 1.60 by shape).
NOISE_MIN_RUNS = 4

LOOP, EXECUTE = "loop", "execute"
PEER_LABELS = {
    "loop": "loop",
    "pool": "Pool().map",
    "executor": "ProcessPoolExecutor().map",
    "joblib": "joblib Parallel(-1)",
}
_CHART_BARS = ("loop", "pool", "executor", "joblib", "best fixed", "execute")


@dataclass
class Runs:
    """Every run of one configuration on one shape."""

    config: str
    seconds: list[float] = field(default_factory=list)
    by_round: list[float | None] = field(default_factory=list)  # None: that round's run failed
    totals: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    plans: list[dict[str, Any] | None] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, output: Mapping[str, Any] | None, total: float, error: str) -> None:
        """Keep one run: its output (None when the child failed), wall seconds and error."""
        self.totals.append(total)
        if output is None or error:
            self.failures.append(error or "no output")
            self.by_round.append(None)
            return
        self.seconds.append(output["seconds"])
        self.by_round.append(output["seconds"])
        self.cpu_seconds.append(output["cpu_seconds"])
        self.plans.append(output.get("plan"))

    @property
    def ok(self) -> bool:
        """Whether every run finished with the right results."""
        return bool(self.seconds) and not self.failures

    @property
    def median(self) -> float:
        """Median seconds of the map; infinite when any run failed (a wrong answer is not fast)."""
        return statistics.median(self.seconds) if self.ok else math.inf

    def median_plan(self) -> dict[str, Any] | None:
        """The plan of the run whose time is the median (execute only)."""
        if not self.ok:
            return None
        middle = min(range(len(self.seconds)), key=lambda i: abs(self.seconds[i] - self.median))
        return self.plans[middle]


@dataclass(frozen=True)
class Summary:
    """One shape's outcome: the medians that matter and whether the bar holds."""

    shape: Shape
    runs: Mapping[str, Runs]
    best_fixed: str

    def median(self, config: str) -> float:
        """Median seconds of ``config`` (infinite when it failed or did not run)."""
        runs = self.runs.get(config)
        return runs.median if runs is not None else math.inf

    @property
    def loop(self) -> float:
        return self.median(LOOP)

    @property
    def execute(self) -> float:
        return self.median(EXECUTE)

    @property
    def best_fixed_seconds(self) -> float:
        return self.median(self.best_fixed) if self.best_fixed else math.inf

    @property
    def best_peer(self) -> str:
        """The fastest of the loop and the peers' defaults."""
        return min(PEER_LABELS, key=self.median)

    @property
    def plan(self) -> dict[str, Any] | None:
        runs = self.runs.get(EXECUTE)
        return runs.median_plan() if runs is not None else None

    @property
    def achieved_speedup(self) -> float:
        return self.loop / self.execute if self.execute > 0 else math.nan

    @property
    def estimate_error(self) -> float:
        """|estimated - achieved| / achieved."""
        if self.plan is None or not math.isfinite(self.achieved_speedup):
            return math.nan
        achieved = self.achieved_speedup
        return abs(self.plan["estimated_speedup"] - achieved) / achieved

    def _paired(self, config: str, factor: float, slack: float = 0.0) -> Interval:
        """execute / (factor x ``config`` + slack), round by round: at most 1 where the bar holds."""
        execute, other = self.runs.get(EXECUTE), self.runs.get(config)
        if execute is None or other is None:
            return median_interval([])
        bounds = [None if s is None else factor * s + slack for s in other.by_round]
        return median_interval(paired_ratios(execute.by_round, bounds))

    @property
    def fixed_paired(self) -> Interval:
        """execute / (FIXED_FACTOR x best fixed + FIXED_SLACK_SECONDS), round by round."""
        return self._paired(self.best_fixed, FIXED_FACTOR, FIXED_SLACK_SECONDS)

    @property
    def peer_paired(self) -> Interval:
        """execute / best peer, round by round."""
        return self._paired(self.best_peer, 1.0)

    @property
    def peer_bar(self) -> Interval:
        """execute / (PEER_FACTOR x best peer + PEER_SLACK_SECONDS), round by round."""
        return self._paired(self.best_peer, PEER_FACTOR, PEER_SLACK_SECONDS)

    @property
    def speedup_paired(self) -> Interval:
        """loop / execute, round by round: the speedup execute achieved."""
        execute, loop = self.runs.get(EXECUTE), self.runs.get(LOOP)
        if execute is None or loop is None:
            return median_interval([])
        return median_interval(paired_ratios(loop.by_round, execute.by_round))

    @property
    def _speedup_bar(self) -> Interval | None:
        """execute / (loop / least speedup), round by round: at most 1 where execute reached
        the shape's least speedup; None where the shape asks none."""
        least = self.shape.min_speedup
        return None if least is None else self._paired(LOOP, 1 / least)

    @property
    def speedup_verdict(self) -> str:
        """The speedup bar's verdict, worded as the other paired ones; "n/a" where none."""
        bar = self._speedup_bar
        return "n/a" if bar is None else _paired_verdict(bar, 1.0)

    @property
    def speedup_ok(self) -> bool | None:
        """None where the shape asks no least speedup."""
        bar = self._speedup_bar
        return None if bar is None else bar.median <= 1.0

    @property
    def fixed_ok(self) -> bool:
        return self.fixed_paired.median <= 1.0

    @property
    def peer_ok(self) -> bool:
        return self.peer_bar.median <= 1.0

    @property
    def estimate_ok(self) -> bool | None:
        """None when the loop is too short for the estimate to be judged."""
        if self.loop < ESTIMATE_MIN_LOOP_SECONDS:
            return None
        return self.estimate_error <= ESTIMATE_TOLERANCE

    @property
    def bar_holds(self) -> bool:
        return (
            self.fixed_ok
            and self.peer_ok
            and self.estimate_ok is not False
            and self.speedup_ok is not False
        )

    def failures(self) -> list[str]:
        """Sentences saying where the bar fails on this shape, with the numbers."""
        lines = []
        if not self.fixed_ok:
            lines.append(
                f"execute over ({FIXED_FACTOR} x best fixed ({self.best_fixed}) + "
                f"{FIXED_SLACK_SECONDS * 1e3:.0f} ms), round by round: "
                f"{_interval(self.fixed_paired, 1.0)}; medians {_s(self.execute)} and "
                f"{_s(self.best_fixed_seconds)}"
            )
        if not self.peer_ok:
            peer = self.best_peer
            lines.append(
                f"execute over ({PEER_FACTOR} x best peer ({PEER_LABELS[peer]}) + "
                f"{PEER_SLACK_SECONDS * 1e3:.0f} ms), round by round: "
                f"{_interval(self.peer_bar, 1.0)}; medians {_s(self.execute)} and "
                f"{_s(self.median(peer))}"
            )
        if self.estimate_ok is False:
            lines.append(
                f"estimated speedup {self.plan['estimated_speedup']:.2f}x vs achieved "
                f"{self.achieved_speedup:.2f}x: off by {self.estimate_error:.0%} "
                f"(> {ESTIMATE_TOLERANCE:.0%})"
                if self.plan
                else "execute failed: no estimate"
            )
        if self.speedup_ok is False:
            least = self.shape.min_speedup
            assert least is not None  # speedup_ok is None without one
            lines.append(
                "loop / execute, round by round: "
                f"{_interval(self.speedup_paired, least, at_least=True)}; "
                f"from medians {self.achieved_speedup:.2f}"
            )
        return lines


def summarize(shape: Shape, runs: Mapping[str, Runs]) -> Summary:
    """The summary of one shape's runs; the best fixed plan is the fastest correct one."""
    fixed = [name for name in runs if name not in PEER_LABELS and name != EXECUTE]
    finished = [name for name in fixed if runs[name].ok]
    best = min(finished, key=lambda name: runs[name].median) if finished else ""
    return Summary(shape, runs, best)


# --- text -------------------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    """Seconds, readable at any scale; FAIL for a configuration without a correct time."""
    if not math.isfinite(seconds):
        return "FAIL"
    return f"{seconds:.3f} s" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def _n(seconds: float) -> str:
    return "FAIL" if not math.isfinite(seconds) else f"{seconds:.3f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "-"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "yes" if ok else "**NO**"


def _paired_verdict(interval: Interval, limit: float) -> str:
    verdict = interval.verdict(limit)
    return verdict.replace("NO", "**NO**") if verdict.startswith("NO") else verdict


def _interval(interval: Interval, limit: float, *, at_least: bool = False) -> str:
    """A failed check's paired ratio in words: its median, its interval, and whether noise may
    explain it. The check asked for at most ``limit``, or ``at_least`` that much."""
    sign, reaches = ("<", interval.high >= limit) if at_least else (">", interval.low <= limit)
    median, rounds = f"median {interval.median:.2f} {sign} {limit}", f"{interval.count} rounds"
    if math.isnan(interval.low):
        return f"{median} over {rounds}, too few for an interval"
    noise = f"; the interval reaches {limit}: noise may explain it" if reaches else ""
    return f"{median}, 95% interval {interval.low:.2f} to {interval.high:.2f} over {rounds}{noise}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _describe_plan(plan: Mapping[str, Any] | None) -> str:
    if plan is None:
        return "FAIL"
    if plan["backend"] == "serial":
        return "serial"
    method = f" ({plan['start_method']})" if plan.get("start_method") else ""
    return f"{plan['backend']}{method} x{plan['n_jobs']} c{plan['chunksize']}"


def summary_table(summaries: list[Summary]) -> list[str]:
    """Per shape: loop, peers, best fixed, execute, their ratios, and the three checks."""
    header = [
        "shape", "loop s", "Pool s", "PPE s", "joblib s", "best fixed", "best fixed s",
        "execute s", "exec / best fixed", "exec / best peer", "paired exec / best peer (95%)",
        "fixed bar", "peer bar", "estimate bar", "speedup bar",
    ]  # fmt: skip
    rows = [
        [
            f"{s.shape.name}",
            _n(s.loop),
            _n(s.median("pool")),
            _n(s.median("executor")),
            _n(s.median("joblib")),
            s.best_fixed or "FAIL",
            _n(s.best_fixed_seconds),
            _n(s.execute),
            _ratio(s.execute / s.best_fixed_seconds),
            f"{_ratio(s.execute / s.median(s.best_peer))} ({s.best_peer})",
            s.peer_paired.text(),
            _paired_verdict(s.fixed_paired, 1.0),
            _paired_verdict(s.peer_bar, 1.0),
            _verdict(s.estimate_ok),
            s.speedup_verdict,
        ]
        for s in summaries
    ]
    return _table(header, rows)


def plan_table(summaries: list[Summary]) -> list[str]:
    """Per shape: what execute chose, its estimate against what it achieved, and why."""
    header = [
        "shape", "plan chosen", "est. speedup", "achieved (loop / execute)", "error",
        "predicted s", "execute s", "predicted loop s", "loop s", "dry run", "plans seen",
        "reason",
    ]  # fmt: skip
    rows = []
    for s in summaries:
        plan = s.plan
        if plan is None:
            rows.append([s.shape.name, "FAIL", *["-"] * (len(header) - 2)])
            continue
        runs = s.runs[EXECUTE]
        seen = sorted({_describe_plan(p) for p in runs.plans})
        rows.append(
            [
                s.shape.name,
                _describe_plan(plan),
                f"{plan['estimated_speedup']:.2f}",
                f"{s.achieved_speedup:.2f}",
                f"{s.estimate_error:.0%}",
                _n(plan.get("predicted_seconds") or math.nan),
                _n(s.execute),
                _n(plan.get("serial_seconds") or math.nan),
                _n(s.loop),
                f"{plan.get('sampled_items')} items, {_s(plan.get('sample_seconds') or 0.0)}",
                "; ".join(seen),
                plan["reason"].replace("|", "/"),
            ]
        )
    return _table(header, rows)


def failure_lines(summaries: list[Summary]) -> list[str]:
    """One bullet per failed check, with the numbers; or a sentence saying none failed."""
    lines = [
        f"- **{s.shape.name}**: {failure}; plan {_describe_plan(s.plan)}, best fixed {s.best_fixed}"
        for s in summaries
        for failure in s.failures()
    ]
    broken = [
        f"- **{s.shape.name}**: {name} gave no correct result: {runs.failures[0]}"
        for s in summaries
        for name, runs in s.runs.items()
        if runs.failures
    ]
    return lines + broken or ["The bar holds on every shape, and every configuration was correct."]


def _facts_lines(facts: Mapping[str, Any]) -> list[str]:
    calibration = facts["calibration"]
    fork = calibration.get("fork_start") or [math.nan, math.nan]
    loky = calibration["loky_start"]
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items())
    git = f" (git {facts['git']})" if facts.get("git") else ""
    return [
        f"- Date: {facts['date']}; command: `{facts['command']}`; "
        f"{facts['repeat']} run{'s' if facts['repeat'] != 1 else ''} per configuration, "
        f"median reported; "
        f"the whole run took {facts['duration_seconds']:.0f} s.",
        f"- Machine: {facts['cpu_count']} CPUs ({facts['cpus']} usable, from {facts['cpus_source']}), "
        f"Python {facts['python']}, {facts['platform']}.",
        f"- Libraries: {versions}{git}.",
        f"- Before each run the benchmark waited for other processes to leave the CPUs: "
        f"{facts['quiet_waited_seconds']:.0f} s in all; {facts['contended_runs']} runs started "
        f"while the machine was still busy.",
        f"- Calibration (cached once per machine, read before any timed run): fork start "
        f"{fork[0] * 1e3:.1f} ms + {fork[1] * 1e3:.1f} ms/worker, loky start "
        f"{loky[0] * 1e3:.1f} ms + {loky[1] * 1e3:.1f} ms/worker, process task "
        f"{calibration['process_task_seconds'] * 1e6:.0f} µs idle and "
        f"{calibration['process_task_loaded_seconds'] * 1e6:.0f} µs with every CPU busy, pipe "
        f"{calibration['pipe_bytes_per_second'] / 1e6:.0f} MB/s.",
    ]


def noise_lines(summaries: list[Summary]) -> list[str]:
    """How much the host's speed moved during the run, read from the loop: the same serial work
    in every run, so its spread is the host's, not a configuration's."""
    spreads = []
    for summary in summaries:
        loop = summary.runs.get(LOOP)
        if loop is None or len(loop.seconds) < NOISE_MIN_RUNS:
            continue
        lower, _, upper = statistics.quantiles(loop.seconds, n=4)
        spreads.append((upper / lower, summary.shape.name))
    if not spreads:
        return []
    (least, calm), (most, noisy) = min(spreads), max(spreads)
    margin = f"{PEER_FACTOR - 1:.0%}"
    verdict = (
        f"wider than the peer bar's {margin} on some shapes, where the ratios of medians may be "
        "noise: the paired ratios cancel the drift between rounds"
        if most > PEER_FACTOR
        else f"within the peer bar's {margin}"
    )
    spread = (
        f"{most:.2f}x ({noisy})"
        if len(spreads) == 1
        else f"{least:.2f}x ({calm}) to {most:.2f}x ({noisy})"
    )
    return [f"- Host noise: the loop's upper quartile was {spread} its lower quartile; {verdict}."]


def console(summaries: list[Summary], facts: Mapping[str, Any]) -> str:
    """What the benchmark prints: facts, the summary, execute's plans and where the bar fails."""
    parts = [
        *_facts_lines(facts),
        *noise_lines(summaries),
        "",
        *summary_table(summaries),
        "",
        *plan_table(summaries),
        "",
        "Where the bar fails:",
        *failure_lines(summaries),
    ]
    return "\n".join(parts)


def markdown(
    summaries: list[Summary], results: Mapping[str, Mapping[str, Runs]], facts: Mapping[str, Any]
) -> str:
    """The whole report as markdown (``benchmarks/results/core.md``)."""
    parts = [
        "# Core benchmark: loop, peers, fixed plans and `execute`",
        "",
        "Generated by `python -m benchmarks.run_core`; see `benchmarks/README.md` for what is "
        "measured. Times are the median seconds of the map inside a fresh process (imports and "
        "building the items excluded). The bar: execute <= "
        f"{FIXED_FACTOR} x best fixed + {FIXED_SLACK_SECONDS * 1e3:.0f} ms; execute <= "
        f"{PEER_FACTOR} x best peer + {PEER_SLACK_SECONDS * 1e3:.0f} ms (the fastest of the loop, "
        "Pool, ProcessPoolExecutor and joblib); "
        f"estimate within {ESTIMATE_TOLERANCE:.0%} of achieved where the loop takes >= "
        f"{ESTIMATE_MIN_LOOP_SECONDS} s; loop / execute >= the shape's least speedup where it "
        "sets one (1.8 on cpu). All but the estimate are judged round by round: the median of "
        "execute's time over the other's in the same round, with a 95% interval; a verdict "
        "whose interval reaches across the bar is marked (noise).",
        "",
        *_facts_lines(facts),
        *noise_lines(summaries),
        "",
        "## Summary",
        "",
        *summary_table(summaries),
        "",
        "## What `execute` planned",
        "",
        *plan_table(summaries),
        "",
        "## Where the bar fails",
        "",
        *failure_lines(summaries),
        "",
        "![time relative to the plain loop](core.png)",
        "",
        "## Every configuration",
    ]
    for summary in summaries:
        shape = summary.shape
        parts += ["", f"### {shape.name}: {shape.description} ({shape.n_items} items)", ""]
        parts += _configuration_table(summary, results[shape.name])
    return "\n".join(parts) + "\n"


def _configuration_table(summary: Summary, runs: Mapping[str, Runs]) -> list[str]:
    header = [
        "configuration",
        "median s",
        "vs loop",
        "min s",
        "max s",
        "CPU s",
        "child total s",
        "result",
    ]
    rows = []
    for name, run in runs.items():
        label = PEER_LABELS.get(name, name)
        if name == summary.best_fixed:
            label = f"**{label}** (best fixed)"
        ok = run.ok
        rows.append(
            [
                label,
                _n(run.median),
                _ratio(run.median / summary.loop),
                _n(min(run.seconds)) if ok else "-",
                _n(max(run.seconds)) if ok else "-",
                _n(statistics.median(run.cpu_seconds)) if ok else "-",
                _n(statistics.median(run.totals)),
                "ok" if ok else f"FAIL: {run.failures[0]}".replace("|", "/"),
            ]
        )
    return _table(header, rows)


# --- the chart --------------------------------------------------------------------------------------


def chart(summaries: list[Summary], path: Path) -> None:
    """A grouped bar chart: per shape, each contender's time relative to the plain loop (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {**PEER_LABELS, "best fixed": "best fixed plan", "execute": "amz.execute"}
    width = 0.8 / len(_CHART_BARS)
    figure, axes = plt.subplots(figsize=(13, 5.5))
    for index, bar in enumerate(_CHART_BARS):
        heights = []
        for summary in summaries:
            seconds = summary.best_fixed_seconds if bar == "best fixed" else summary.median(bar)
            heights.append(seconds / summary.loop if math.isfinite(seconds) else math.nan)
        positions = [
            shape + (index - (len(_CHART_BARS) - 1) / 2) * width for shape in range(len(summaries))
        ]
        axes.bar(positions, heights, width, label=labels[bar])
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_yscale("log")
    axes.set_xticks(range(len(summaries)), [summary.shape.name for summary in summaries])
    axes.set_ylabel("median time / plain loop (log; lower is better)")
    axes.set_title("Core benchmark: each configuration in a fresh process")
    axes.legend(ncols=3, fontsize="small")
    axes.grid(axis="y", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
