"""The core benchmark: a plain loop, its peers, a fixed grid and ``execute``, side by side.

Every configuration of every workload shape runs in a fresh Python process, as a scheduled
pipeline task does, and is repeated; the median is reported. Inside that process the clock runs
around the map only: imports and building the items are done before it starts. The parent also
times the whole child (interpreter start, imports, items, map, exit).

Usage (from the repository root)::

    python -m benchmarks.run_core                      # everything, 3 repeats (~10.5 min, 2 cores)
    python -m benchmarks.run_core --shapes cpu,io      # some shapes only
    python -m benchmarks.run_core --quick              # 1 repeat, a smaller grid, no files written

Results go to ``benchmarks/results/core.md``, ``core.png`` and ``core-rounds.json`` (every run's
seconds, round by round; ``--output`` moves them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from . import core_report
from .core_report import Runs
from .preload import preload_amorsize
from .workloads import SHAPES, Shape, same_checksum

__all__ = ["Config", "fixed_grid", "main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path("benchmarks") / "results"
DEFAULT_REPEAT = 3
# The slowest configuration (ProcessPoolExecutor's defaults, one task per item, on 300k cheap items)
# takes about 30 s; a child still running after this long is hung, and counts as a failure.
CHILD_TIMEOUT_SECONDS = 180
# Before each run, the machine must be quiet: other processes using at most this many CPUs over a
# probe this long (idle here reads 0; a test suite running elsewhere reads 1 or more). A run waits
# at most QUIET_MAX_WAIT_SECONDS for it, then starts anyway and is counted as contended.
QUIET_CPUS = 0.3
QUIET_PROBE_SECONDS = 0.05
QUIET_MAX_WAIT_SECONDS = 10.0
# A fixed chunk size (1, 8, 64) is left out of the grid when it is within this factor of a chunk
# size derived from the item count: the two would measure nearly the same configuration.
NEAR_FACTOR = 1.5
FIXED_CHUNKSIZES = (1, 8, 64)

LOOP, POOL, EXECUTOR, JOBLIB, EXECUTE = "loop", "pool", "executor", "joblib", "execute"
PEERS = (POOL, EXECUTOR, JOBLIB)
_FIXED_NAME = re.compile(r"(threads|processes-fork|processes-loky)-x(\d+)-c(\d+)")

if TYPE_CHECKING:
    from amorsize_flows import Plan, RunRecord

# A map's results, and for execute a way to describe its plan once the clock has stopped.
Describe = Callable[[], dict[str, Any]]
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], tuple[list[Any], Describe | None]]


# --- configurations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One way to run the map: a baseline, a peer's defaults, a fixed plan, or ``execute``.

    Attributes:
        kind: ``loop``, ``pool``, ``executor``, ``joblib``, ``fixed`` or ``execute``.
        backend: for ``fixed``: ``threads`` or ``processes``.
        n_jobs, chunksize: for ``fixed``: workers and items per chunk.
        start_method: for fixed processes: ``fork`` or ``loky``.
    """

    kind: str
    backend: str = ""
    n_jobs: int = 1
    chunksize: int = 1
    start_method: str = ""

    @property
    def name(self) -> str:
        """A name safe on a command line, e.g. ``threads-x8-c64`` or ``processes-fork-x2-c50``."""
        if self.kind != "fixed":
            return self.kind
        method = f"-{self.start_method}" if self.start_method else ""
        return f"{self.backend}{method}-x{self.n_jobs}-c{self.chunksize}"

    @classmethod
    def parse(cls, name: str) -> Config:
        """The configuration a :attr:`name` stands for.

        Raises:
            ValueError: when ``name`` names no configuration.
        """
        if name in (LOOP, *PEERS, EXECUTE):
            return cls(name)
        match = _FIXED_NAME.fullmatch(name)
        if match is None:
            raise ValueError(
                f"`config` must be one of {LOOP}, {', '.join(PEERS)}, {EXECUTE} or a fixed plan "
                f"like threads-x8-c64 or processes-fork-x2-c50, got {name!r}"
            )
        backend, _, method = match[1].partition("-")
        return cls("fixed", backend, int(match[2]), int(match[3]), method)


def chunksizes(shape: Shape, n_jobs: int, *, quick: bool = False) -> list[int]:
    """The chunk sizes worth trying for ``shape`` on ``n_jobs`` workers.

    Always a quarter and all of each worker's share (``n/(4*n_jobs)``, ``n/n_jobs``); unless
    ``quick``, also 1, 8 and 64 where they are not near those and make at most
    ``shape.max_chunks`` chunks.
    """
    share = math.ceil(shape.n_items / n_jobs)
    derived = {_quarter(shape, n_jobs), share}
    sizes = set(derived)
    if not quick:
        sizes |= {
            size
            for size in FIXED_CHUNKSIZES
            if size <= share
            and math.ceil(shape.n_items / size) <= shape.max_chunks
            and all(max(size, d) / min(size, d) >= NEAR_FACTOR for d in derived)
        }
    return sorted(sizes)


def fixed_grid(shape: Shape, *, quick: bool = False) -> list[Config]:
    """The fixed plans measured for ``shape``.

    Threads at the shape's thread counts; processes forked from the caller at 2 workers and at
    every usable CPU (at one chunk size for work that waits); and, unless ``quick``, processes with
    loky's default start method at one chunk size: the cost of not forking.
    """
    configs = [
        Config("fixed", "threads", n_jobs, size)
        for n_jobs in shape.thread_counts
        for size in chunksizes(shape, n_jobs, quick=quick)
    ]
    for n_jobs in sorted({2, _usable_cpus()}):
        quarter = _quarter(shape, n_jobs)
        sizes = [quarter] if shape.waits else chunksizes(shape, n_jobs, quick=quick)
        configs += [Config("fixed", "processes", n_jobs, size, "fork") for size in sizes]
        if not quick:
            configs.append(Config("fixed", "processes", n_jobs, quarter, "loky"))
    return configs


def _quarter(shape: Shape, n_jobs: int) -> int:
    """A quarter of each worker's share of the items: four chunks per worker."""
    return math.ceil(shape.n_items / (4 * n_jobs))


def configs_for(shape: Shape, *, quick: bool = False) -> list[Config]:
    """Every configuration measured for ``shape``, the loop first (it is the reference)."""
    return [
        Config(LOOP),
        *(Config(peer) for peer in PEERS),
        *fixed_grid(shape, quick=quick),
        Config(EXECUTE),
    ]


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- the child: one configuration, timed -------------------------------------------------------------


def _mapper(config: Config) -> Mapper:
    """A function that maps with ``config``, its imports done now, outside the timed part."""
    if config.kind == LOOP:
        return lambda func, items: ([func(item) for item in items], None)
    if config.kind == POOL:
        import multiprocessing

        def pool_map(func: Callable[[Any], Any], items: Iterable[Any]) -> tuple[list[Any], None]:
            with multiprocessing.Pool() as pool:
                return pool.map(func, items), None

        return pool_map
    if config.kind == EXECUTOR:
        from concurrent.futures import ProcessPoolExecutor

        def executor_map(
            func: Callable[[Any], Any], items: Iterable[Any]
        ) -> tuple[list[Any], None]:
            with ProcessPoolExecutor() as executor:
                return list(executor.map(func, items)), None

        return executor_map
    if config.kind == JOBLIB:
        from joblib import Parallel, delayed

        return lambda func, items: (
            Parallel(n_jobs=-1)(delayed(func)(item) for item in items),
            None,
        )

    # The package loads its modules and libraries on first use, which must happen here.
    from amorsize_flows import Plan, execute, run

    preload_amorsize()

    if config.kind == EXECUTE:

        def execute_map(
            func: Callable[[Any], Any], items: Iterable[Any]
        ) -> tuple[list[Any], Describe]:
            outcome = run(func, items)
            # Described after the clock stops: reading the plan is the benchmark's work.
            return outcome.results, lambda: _execute_facts(outcome.plan, outcome.record)

        return execute_map
    backend = cast(Literal["threads", "processes"], config.backend)
    plan = Plan.fixed(
        backend, config.n_jobs, config.chunksize, start_method=config.start_method or None
    )
    return lambda func, items: (execute(func, items, plan=plan), None)


def _execute_facts(plan: Plan, record: RunRecord) -> dict[str, Any]:
    """What ``execute`` chose and predicted, and what its own record measured."""
    facts = plan.to_dict()
    profile = facts.get("profile", {})
    return {
        "backend": plan.backend,
        "n_jobs": plan.n_jobs,
        "chunksize": plan.chunksize,
        "start_method": facts.get("start_method"),
        "estimated_speedup": plan.estimated_speedup,
        "predicted_seconds": facts.get("predicted_seconds"),
        "serial_seconds": facts.get("serial_seconds"),
        "reason": plan.reason,
        "sampled_items": profile.get("sampled_items"),
        "sample_seconds": record.sample_seconds,
    }


def run_one(shape_name: str, config_name: str) -> dict[str, Any]:
    """Run one configuration once in this process and return what it measured."""
    shape, config = SHAPES[shape_name], Config.parse(config_name)
    map_with = _mapper(config)
    items = shape.build()
    cpu_started, started = time.process_time(), time.perf_counter()
    results, describe = map_with(shape.func, items)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    plan = describe() if describe is not None else None
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "n_results": len(results),
        "checksum": shape.checksum(results),
        "plan": plan,
    }


def warm_up() -> dict[str, Any]:
    """Calibrate the machine (or read its cache) and load the libraries once, before any timing."""
    import joblib
    import loky
    import numpy

    import amorsize_flows as amz
    from amorsize_flows.measure.calibration import get_calibration

    calibration = get_calibration()
    limits = amz.worker_limits()
    return {
        "calibration": calibration.to_dict(),
        "cpus": limits.cpus,
        "cpus_source": limits.cpus_source,
        "versions": {
            "amorsize-flows": amz.__version__,
            "joblib": joblib.__version__,
            "loky": loky.__version__,
            "numpy": numpy.__version__,
        },
    }


# --- the parent: every configuration in a fresh process -------------------------------------------


@contextlib.contextmanager
def snapshot() -> Iterator[Path]:
    """A copy of ``amorsize_flows/`` and ``benchmarks/`` taken now, for every child to import.

    Others may edit or commit the package while the benchmark runs; without a copy, later runs
    would measure other code than earlier ones. A child runs in the copy, which comes first on its
    ``sys.path`` (``python -m`` puts the working directory there), before any installed package.
    """
    with tempfile.TemporaryDirectory(prefix="amorsize-benchmark-") as directory:
        for package in ("amorsize_flows", "benchmarks"):
            shutil.copytree(
                REPO_ROOT / package,
                Path(directory) / package,
                ignore=shutil.ignore_patterns("__pycache__", "results"),
            )
        yield Path(directory)


def _child(arguments: Sequence[str], directory: Path) -> tuple[dict[str, Any] | None, float, str]:
    """Run this module in a fresh process; return its JSON (or None), its wall seconds, an error."""
    command = [sys.executable, "-m", "benchmarks.run_core", *arguments]
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command, cwd=directory, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - started, f"timed out after {CHILD_TIMEOUT_SECONDS} s"
    total = time.perf_counter() - started
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        detail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return None, total, f"exit code {completed.returncode}: {detail}"
    return json.loads(lines[-1]), total, ""


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (Linux ``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    ticks = [int(value) for value in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Quiet:
    """Waits for other processes to leave the CPUs alone before a run, and counts the waits."""

    waited_seconds: float = 0.0
    contended_runs: int = 0

    def wait(self) -> None:
        """Return once the machine is quiet, or after QUIET_MAX_WAIT_SECONDS (contended)."""
        started = time.perf_counter()
        while (before := _busy_cpu_seconds()) is not None:
            time.sleep(QUIET_PROBE_SECONDS)
            busy = ((_busy_cpu_seconds() or before) - before) / QUIET_PROBE_SECONDS
            waited = time.perf_counter() - started - QUIET_PROBE_SECONDS
            if busy <= QUIET_CPUS or waited >= QUIET_MAX_WAIT_SECONDS:
                self.waited_seconds += waited
                self.contended_runs += busy > QUIET_CPUS
                return


@dataclass
class Launcher:
    """Starts each run in a fresh process, in the snapshot of the code, on a quiet machine."""

    directory: Path
    quiet: Quiet = field(default_factory=Quiet)

    def run(self, arguments: Sequence[str]) -> tuple[dict[str, Any] | None, float, str]:
        """Wait for quiet, then run one child: its JSON (or None), wall seconds and error."""
        self.quiet.wait()
        return _child(arguments, self.directory)


def measure_shape(
    shape: Shape, configs: list[Config], repeat: int, launcher: Launcher, log: Callable[[str], None]
) -> dict[str, Runs]:
    """Run every configuration ``repeat`` times, round-robin so that drift hits all alike.

    The loop runs first in every round (it is the reference for the results); the others run in
    an order shuffled per round (seeded, so a rerun repeats it), so that no configuration always
    follows the same neighbour or sits at the same point of a round on a host whose speed drifts.
    """
    runs = {config.name: Runs(config.name) for config in configs}
    expected: tuple[int, Any] | None = None
    for round_index in range(repeat):
        others = [config for config in configs if config.kind != LOOP]
        random.Random(round_index).shuffle(others)
        for config in [Config(LOOP), *others]:
            output, total, error = launcher.run(["--one", shape.name, config.name])
            if output is not None:
                got = (output["n_results"], output["checksum"])
                if config.kind == LOOP and expected is None:
                    expected = got
                if expected is None:
                    error = "the plain loop failed, so there is no reference result"
                elif got[0] != expected[0] or not same_checksum(got[1], expected[1]):
                    error = f"wrong results: {got[0]} items, checksum {got[1]!r}, expected {expected[1]!r}"
            runs[config.name].add(output, total, error)
            status = error if output is None or error else f"{output['seconds']:.3f} s"
            log(f"  {shape.name} [{round_index + 1}/{repeat}] {config.name}: {status}")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; see the module docstring. Exits with 2 when the bar fails somewhere."""
    args = _parser().parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return 0
    if args.warm_up:
        print(json.dumps(warm_up()))
        return 0
    repeat = args.repeat if args.repeat is not None else 1 if args.quick else DEFAULT_REPEAT

    started, git = time.perf_counter(), _git_state()
    with snapshot() as directory:
        launcher = Launcher(directory)
        facts, _, error = launcher.run(["--warm-up"])
        if facts is None:
            print(f"warm-up failed ({error}); is the calibration possible here?", file=sys.stderr)
            return 1
        results: dict[str, dict[str, Runs]] = {}
        for name in args.shapes:
            configs = configs_for(SHAPES[name], quick=args.quick)
            _log(f"{name}: {len(configs)} configurations x {repeat}")
            results[name] = measure_shape(SHAPES[name], configs, repeat, launcher, _log)
    summaries = [core_report.summarize(SHAPES[name], runs) for name, runs in results.items()]
    arguments = list(argv if argv is not None else sys.argv[1:])
    facts.update(
        _run_facts(arguments, repeat, launcher.quiet),
        git=git,
        duration_seconds=time.perf_counter() - started,
    )
    print(core_report.console(summaries, facts))
    output = args.output if args.output is not None else (None if args.quick else DEFAULT_OUTPUT)
    if output is not None:
        target = output if output.is_absolute() else REPO_ROOT / output
        target.mkdir(parents=True, exist_ok=True)
        (target / "core.md").write_text(core_report.markdown(summaries, results, facts))
        core_report.chart(summaries, target / "core.png")
        # Every run's seconds in round order (null: failed), for analyses the report does not make.
        rounds = {
            shape: {config: runs.by_round for config, runs in shape_runs.items()}
            for shape, shape_runs in results.items()
        }
        (target / "core-rounds.json").write_text(json.dumps({"git": git, "rounds": rounds}) + "\n")
        print(
            f"wrote {output / 'core.md'}, {output / 'core.png'} and {output / 'core-rounds.json'}"
        )
    return 0 if all(summary.bar_holds for summary in summaries) else 2


def _run_facts(arguments: list[str], repeat: int, quiet: Quiet) -> dict[str, Any]:
    """The facts of this run that the report names, beside the warm-up child's."""
    return {
        "command": shlex.join(["python", "-m", "benchmarks.run_core", *arguments]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu_count": os.cpu_count(),
        "repeat": repeat,
        "quiet_waited_seconds": quiet.waited_seconds,
        "contended_runs": quiet.contended_runs,
    }


def _git_state() -> str:
    """The commit measured, and whether the package had uncommitted changes ("" without git).

    Taken when the run starts: the code under ``amorsize_flows/`` is imported by every child.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "amorsize_flows"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return ""
    return f"{commit}{' with uncommitted changes to amorsize_flows/' if changes else ''}"


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _shape_names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"shapes must be a comma-separated list of {', '.join(SHAPES)}, got {value!r}"
        )
    return names


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_core",
        description="Time a plain loop, its peers, a grid of fixed plans and amz.execute, each in "
        "a fresh process, over several workload shapes.",
    )
    parser.add_argument(
        "--shapes",
        type=_shape_names,
        default=list(SHAPES),
        help=f"comma-separated shapes (default: all of {','.join(SHAPES)})",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=None,
        help=f"runs of each configuration; the median is reported (default {DEFAULT_REPEAT}, "
        f"1 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one run each and a smaller grid, for a smoke test; writes no files unless --output",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"where core.md and core.png go (default {DEFAULT_OUTPUT}, relative to the repo root)",
    )
    parser.add_argument("--one", nargs=2, metavar=("SHAPE", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", action="store_true", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main())
