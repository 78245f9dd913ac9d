"""Airflow's CeleryExecutor with a real Celery worker (kombu's SQLAlchemy transport on SQLite:
no broker server): its prefork pool runs tasks in daemonic processes, where multiprocessing
refuses children (apache/airflow#13298); a stage's map there still runs on processes, and
killing the task's process leaves none of them behind."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("airflow.providers.celery")

from tests.deployments.airflow_deployment import REPO, Airflow, airflow_deployment
from tests.deployments.services import map_workers, wait_for_exit, wait_until

pytestmark = pytest.mark.deployment

DAGS = [REPO / "tests" / "deployments" / "dags" / "cpu_stages.py"]
DAY = "2026-06-01T00:00:00Z"
WORKER_EXIT_SECONDS = 10.0


@pytest.fixture(scope="module")
def celery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Airflow, Path]]:
    tmp_path = tmp_path_factory.mktemp("airflow-celery")
    pids = tmp_path / "pids.txt"
    env = {"AMORSIZE_TEST_PIDS_FILE": str(pids)}
    with airflow_deployment(tmp_path, DAGS, "CeleryExecutor", env) as deployment:
        for dag_id in ("cpu_stage", "endless_stage"):
            deployment.dag(dag_id)
            deployment.unpause(dag_id)
        yield deployment, pids


@pytest.mark.timeout(600)
def test_a_cpu_bound_stage_in_a_celery_task_runs_on_processes(
    celery: tuple[Airflow, Path],
) -> None:
    airflow, _ = celery
    run_id = airflow.trigger("cpu_stage", DAY)
    assert airflow.wait_for_run("cpu_stage", run_id, 300) == "success", airflow.services.log(
        "celery-worker"
    )
    plan = airflow.xcom("cpu_stage", run_id, "planned", "amorsize_plan")
    assert (plan["backend"], plan["n_jobs"]) == ("processes", 2), plan["reason"]
    assert "daemonic process" in plan["reason"], plan["reason"]  # a prefork pool child ran it
    serial = airflow.xcom("cpu_stage", run_id, "serial", "amorsize_run")
    assert serial["backend"] == "serial" and serial["n_items"] == 400


@pytest.mark.timeout(600)
def test_sigkill_of_the_celery_task_process_leaves_no_worker(
    celery: tuple[Airflow, Path],
) -> None:
    airflow, pids = celery
    airflow.trigger("endless_stage", DAY)
    task, workers = wait_until(lambda: map_workers(pids), 180, "the endless map's two workers")
    os.kill(task, signal.SIGKILL)
    wait_for_exit(workers, WORKER_EXIT_SECONDS, f"the map workers of the killed task {task}")
