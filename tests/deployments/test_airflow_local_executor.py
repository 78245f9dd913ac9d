"""The example retraining DAG on a real Airflow deployment: the scheduler with LocalExecutor,
the dag-processor and the api-server, each a process of its own, driven through the REST API.

Two runs, on two consecutive data intervals, as the daily schedule makes them: the first plans
every stage from a dry run, the second from the first one's record (read through XCom with
``include_prior_dates``, which regressed upstream in 3.0.3 and 3.0.4: apache/airflow#53593)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("airflow")

from tests.deployments.airflow_deployment import (
    REPO,
    XCOM_STORAGE,
    Airflow,
    airflow_deployment,
)

pytestmark = pytest.mark.deployment

DAG_ID = "digits_ensemble"
STAGES = ("featurize_train", "featurize_test", "cv_grid", "train_member", "predict")
RUN_SECONDS = 600.0
FIRST_DAY, NEXT_DAY = "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    tmp_path = tmp_path_factory.mktemp("airflow-local-executor")
    with airflow_deployment(tmp_path, [REPO / "dags" / "digits_ensemble.py"]) as deployment:
        deployment.dag(DAG_ID)
        deployment.unpause(DAG_ID)
        yield deployment


@pytest.fixture(scope="module")
def two_runs(airflow: Airflow) -> list[str]:
    """The run ids of two consecutive daily runs, each run to its end."""
    runs = []
    for day in (FIRST_DAY, NEXT_DAY):
        run_id = airflow.trigger(DAG_ID, day)
        state = airflow.wait_for_run(DAG_ID, run_id, RUN_SECONDS)
        assert state == "success", airflow.task_states(DAG_ID, run_id)
        runs.append(run_id)
    return runs


@pytest.mark.timeout(1500)
def test_every_stage_stores_its_plan_and_record_readable_through_the_api(
    airflow: Airflow, two_runs: list[str]
) -> None:
    first = two_runs[0]
    for stage in STAGES:
        plan = airflow.xcom(DAG_ID, first, stage, "amorsize_plan")
        record = airflow.xcom(DAG_ID, first, stage, "amorsize_run")
        assert plan["source"] == "sampled", (stage, plan)
        assert plan["limits"]["cpus"] >= 1, (stage, plan)
        assert record["n_items"] == plan["n_items"] and record["wall_seconds"] > 0, (stage, record)


@pytest.mark.timeout(1500)
def test_the_next_daily_run_plans_from_the_previous_run_s_record(
    airflow: Airflow, two_runs: list[str]
) -> None:
    plans = {stage: airflow.xcom(DAG_ID, two_runs[1], stage, "amorsize_plan") for stage in STAGES}
    sources = {stage: plan["source"] for stage, plan in plans.items()}
    assert set(sources.values()) == {"history"}, {s: p["reason"] for s, p in plans.items()}


@pytest.mark.timeout(1500)
def test_the_features_reach_their_next_tasks_through_object_storage(
    airflow: Airflow, two_runs: list[str]
) -> None:
    # featurize_train returns 6 MB of JSON: over the 1 MB threshold, so the database keeps a
    # reference and the list lives in object storage; cv_grid and train_member consumed it.
    first = two_runs[0]
    reference = airflow.xcom(DAG_ID, first, "featurize_train", "return_value")
    assert isinstance(reference, str) and XCOM_STORAGE in reference, str(reference)[:200]
    stored = [path for path in (airflow.home / XCOM_STORAGE).rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in stored) > 1 << 20, stored
    assert airflow.task_states(DAG_ID, first)["train_member"] == "success"
