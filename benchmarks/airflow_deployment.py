"""The example DAG on a real Airflow deployment (scheduler with LocalExecutor, dag-processor,
api-server on loopback): each stage's plan, its estimate and what it achieved, run after run.

Each run is the next daily data interval: the first plans every stage from a dry run, the later
ones from the previous run's record. A stage passes where it is no slower than its own serial loop
beyond noise and its estimate is within 25% of what it achieved. Both stages of a pair
that run at once (featurize_train and featurize_test) share the node's two CPUs through the
worker lease.

Usage (from the repository root)::

    python -m benchmarks.airflow_deployment              # 3 runs: about 3 minutes on 2 cores
    python -m benchmarks.airflow_deployment --runs 5 --output DIR
"""

from __future__ import annotations

import datetime
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.deployments.airflow_deployment import REPO, airflow_deployment

from .command_line import run_benchmark

__all__ = ["main"]

DAG_ID = "digits_ensemble"
STAGES = ("featurize_train", "featurize_test", "cv_grid", "train_member", "predict")
DEFAULT_RUNS = 3
FIRST_DAY = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
RUN_SECONDS = 600.0
ESTIMATE_TOLERANCE = 0.25  # the production issue's bar: estimate within 25% of achieved
# "No slower than its serial loop beyond noise": the same stage's loop varies more than this from
# run to run here (docs/decisions.md#the-benchmark-bars).
SERIAL_NOISE = 0.05


def _runs(count: int) -> list[dict[str, tuple[dict[str, Any], dict[str, Any]]]]:
    """For each run, every stage's (plan, record) as the REST API returns them."""
    dag_file = REPO / "dags" / "digits_ensemble.py"
    with (
        tempfile.TemporaryDirectory(prefix="amorsize-airflow-bench-") as tmp,
        airflow_deployment(Path(tmp), [dag_file]) as airflow,
    ):
        airflow.dag(DAG_ID)
        airflow.unpause(DAG_ID)
        runs = []
        for day in range(count):
            logical = (FIRST_DAY + datetime.timedelta(days=day)).isoformat()
            run_id = airflow.trigger(DAG_ID, logical)
            state = airflow.wait_for_run(DAG_ID, run_id, RUN_SECONDS)
            if state != "success":
                raise RuntimeError(f"run {day + 1} {state}: {airflow.task_states(DAG_ID, run_id)}")
            runs.append(
                {
                    stage: (
                        airflow.xcom(DAG_ID, run_id, stage, "amorsize_plan"),
                        airflow.xcom(DAG_ID, run_id, stage, "amorsize_run"),
                    )
                    for stage in STAGES
                }
            )
    return runs


def _report(runs: list[dict[str, tuple[dict[str, Any], dict[str, Any]]]]) -> str:
    lines = [
        "# The example DAG on a real LocalExecutor deployment",
        "",
        f"`python -m benchmarks.airflow_deployment --runs {len(runs)}`: scheduler (LocalExecutor), "
        "dag-processor and api-server on loopback, SQLite, 2 CPUs; one run per daily data "
        "interval. estimate / achieved within "
        f"{1 - ESTIMATE_TOLERANCE:.2f} to {1 + ESTIMATE_TOLERANCE:.2f}, and achieved at least "
        f"{1 - SERIAL_NOISE:.2f}x (no slower than the stage's own serial loop beyond noise), pass.",
        "",
        "| run | stage | plan | from | wall s | estimated | achieved | estimate / achieved | pass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, stages in enumerate(runs, 1):
        for stage, (plan, record) in stages.items():
            estimated, achieved = plan["estimated_speedup"], record["achieved_speedup"]
            ratio = estimated / achieved
            passed = achieved >= 1 - SERIAL_NOISE and abs(ratio - 1) <= ESTIMATE_TOLERANCE
            lines.append(
                f"| {number} | {stage} | {plan['backend']} x{plan['n_jobs']} | {plan['source']} | "
                f"{record['wall_seconds']:.2f} | {estimated:.2f}x | {achieved:.2f}x | "
                f"{ratio:.2f} | {'yes' if passed else 'NO'} |"
            )
    lines += ["", "Plans' reasons, last run:", ""]
    lines += [f"- {stage}: {plan['reason']}" for stage, (plan, _) in runs[-1].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        __doc__,
        "airflow_deployment.md",
        lambda runs: _report(_runs(runs)),
        rounds=DEFAULT_RUNS,
        option="--runs",
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
