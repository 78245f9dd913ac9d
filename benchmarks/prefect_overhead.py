"""What ``@amorsize_task`` adds to a Prefect stage, against a ``@task`` with a hand-picked pool.

One flow run per repetition on a temporary Prefect server (``prefect_test_harness``), both stages
in the same run, for three shapes: a cheap function, 5 ms of CPU per item, and 10 ms waits per
item. The hand-picked stage is what a user would write after tuning by hand: a plain loop,
``ProcessPoolExecutor(2).map(chunksize=50)`` and ``ThreadPoolExecutor(64).map``. Durations are the
task runs' own (start to end, from the API). The first repetition of the amorsize stage samples;
later ones start from the record kept in a Prefect Variable, as a scheduled flow does. The bar:
at most 5% or 0.3 s added.

Run: ``python -m benchmarks.prefect_overhead [--repeat 4]``; writes
``benchmarks/results/prefect_overhead.md``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import workloads as w
from benchmarks.overhead_report import write_report

RESULTS = Path(__file__).parent / "results" / "prefect_overhead.md"
SHAPES: dict[str, tuple[Any, int, tuple[str, int, int] | None]] = {
    "cheap": (w.square_plus_one, 300_000, None),
    "cpu": (w.burn_5ms, 400, ("processes", 2, 50)),
    "io": (w.wait_10ms, 300, ("threads", 64, 1)),
}


def hand_picked(name: str, items: list[int]) -> list[Any]:
    """The map a user would write after tuning it by hand for this shape."""
    func, _, pool = SHAPES[name]
    if pool is None:
        return [func(x) for x in items]
    kind, workers, chunksize = pool
    executor = ProcessPoolExecutor if kind == "processes" else ThreadPoolExecutor
    with executor(workers) as running:
        return list(running.map(func, items, chunksize=chunksize))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="amorsize-prefect-bench-")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from amorsize_flows.prefect import amorsize_task

    plain = {name: task(name=f"hand-picked-{name}")(hand_picked) for name in SHAPES}
    ours = {
        name: amorsize_task(func).with_options(name=f"amorsize-{name}")
        for name, (func, _, _) in SHAPES.items()
    }

    @flow
    def overhead() -> None:
        for name, (_, n, _) in SHAPES.items():
            plain[name](name, list(range(n)))
            ours[name](list(range(n)))

    durations: dict[str, list[float]] = {}
    with prefect_test_harness(server_startup_timeout=120):
        for _ in range(args.repeat):
            state = overhead(return_state=True)
            with get_client(sync_client=True) as client:
                run_id = state.state_details.flow_run_id
                for run in client.read_task_runs():
                    if run.flow_run_id == run_id and run.start_time and run.end_time:
                        seconds = (run.end_time - run.start_time).total_seconds()
                        task_name = run.name.rsplit("-", 1)[0]  # task runs are "<task>-<suffix>"
                        durations.setdefault(task_name, []).append(seconds)
    _report(durations, args.repeat)


def _report(durations: dict[str, list[float]], repeat: int) -> None:
    intro = (
        f"`python -m benchmarks.prefect_overhead --repeat {repeat}`: task-run durations (seconds) "
        "on a temporary Prefect server, both stages in the same flow runs. First run: the "
        "amorsize stage samples; later runs: it starts from the record in its Variable."
    )
    print(
        write_report(
            RESULTS,
            "Prefect: what `@amorsize_task` adds to a stage",
            intro,
            SHAPES,
            durations,
            ("hand-picked-{}", "amorsize-{}"),
        )
    )


if __name__ == "__main__":
    main()
