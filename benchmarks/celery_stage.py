"""A stage of 5 ms pure-Python calls inside a task of a real Celery worker (Airflow's
CeleryExecutor): planned by amorsize-flows, against the same stage run serially.

Each round triggers ``cpu_stage`` (tests/deployments/dags/cpu_stages.py) once: its ``planned``
task maps 400 calls as the plan says, then its ``serial`` task maps them in a loop, in the same
worker, one after the other. The ratio of their wall times (read back from their XCom records,
the planned one's dry run included) is taken round by round.

Usage (from the repository root)::

    python -m benchmarks.celery_stage                # 5 rounds: about 2 minutes on 2 cores
    python -m benchmarks.celery_stage --rounds 9 --output DIR
"""

from __future__ import annotations

import datetime
import statistics
import sys
import tempfile
from pathlib import Path

from tests.deployments.airflow_deployment import REPO, airflow_deployment

from .command_line import run_benchmark
from .paired import median_interval

__all__ = ["main"]

DAG_ID = "cpu_stage"
DEFAULT_ROUNDS = 5
FIRST_DAY = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
RUN_SECONDS = 300.0
BAR = 1.7  # the production issue's: 1.7x or more over the same stage run serially


def _rounds(count: int) -> list[tuple[float, float, str]]:
    """(planned wall s, serial wall s, planned plan) of each round."""
    dag_file = REPO / "tests" / "deployments" / "dags" / "cpu_stages.py"
    rounds = []
    with (
        tempfile.TemporaryDirectory(prefix="amorsize-celery-bench-") as tmp,
        airflow_deployment(Path(tmp), [dag_file], "CeleryExecutor") as airflow,
    ):
        airflow.dag(DAG_ID)
        airflow.unpause(DAG_ID)
        for number in range(count):
            logical = (FIRST_DAY + datetime.timedelta(days=number)).isoformat()
            run_id = airflow.trigger(DAG_ID, logical)
            state = airflow.wait_for_run(DAG_ID, run_id, RUN_SECONDS)
            if state != "success":
                raise RuntimeError(
                    f"round {number + 1} {state}: {airflow.services.log('celery-worker')}"
                )
            planned = airflow.xcom(DAG_ID, run_id, "planned", "amorsize_run")
            serial = airflow.xcom(DAG_ID, run_id, "serial", "amorsize_run")
            plan = f"{planned['backend']} x{planned['n_jobs']} ({planned['source']})"
            rounds.append((planned["wall_seconds"], serial["wall_seconds"], plan))
    return rounds


def _report(rounds: list[tuple[float, float, str]]) -> str:
    speedups = median_interval([serial / planned for planned, serial, _ in rounds])
    lines = [
        "# A stage of 5 ms calls inside a Celery task",
        "",
        f"`python -m benchmarks.celery_stage --rounds {len(rounds)}`: Airflow's CeleryExecutor, "
        "one Celery worker (prefork, kombu's SQLAlchemy transport on SQLite), 2 CPUs; 400 calls "
        "of 5 ms of pure-Python CPU, planned, then serially, in each round.",
        "",
        "| round | plan | planned wall s | serial wall s | speedup |",
        "|---|---|---|---|---|",
    ]
    for number, (planned, serial, plan) in enumerate(rounds, 1):
        lines.append(
            f"| {number} | {plan} | {planned:.2f} | {serial:.2f} | {serial / planned:.2f}x |"
        )
    lines += [
        "",
        f"Speedup over serial, median of the rounds: {speedups.text()} "
        f"(bar {BAR}x: {'yes' if speedups.median >= BAR else 'NO'}"
        f"{'' if (speedups.low >= BAR) == (speedups.median >= BAR) else ' (noise)'}); "
        f"planned wall s median {statistics.median(p for p, _, _ in rounds):.2f}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        __doc__,
        "celery_stage.md",
        lambda rounds: _report(_rounds(rounds)),
        rounds=DEFAULT_ROUNDS,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
