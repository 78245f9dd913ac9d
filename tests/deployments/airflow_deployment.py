"""A real Airflow 3 deployment for a test: the scheduler (LocalExecutor), the dag-processor and
the api-server as processes of their own on loopback, over a fresh SQLite metadata DB; driven
through the public REST API, as a user's CI or UI would."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.deployments.services import Services, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 120.0
XCOM_STORAGE = "xcom-storage"  # under the deployment's home
AIRFLOW = [sys.executable, "-m", "airflow"]


@dataclass
class Airflow:
    """A running deployment: its REST API (authenticated) and its home folder."""

    api: httpx.Client
    home: Path
    services: Services

    def dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The DAG once the dag-processor has parsed it."""
        return wait_until(
            lambda: _json_or_none(self.api.get(f"/api/v2/dags/{dag_id}")),
            timeout,
            f"the dag-processor to parse {dag_id}",
        )

    def unpause(self, dag_id: str) -> None:
        self.api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, logical_date: str) -> str:
        """Start a DAG run for the data interval at ``logical_date``; return its run id."""
        response = self.api.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": logical_date}
        )
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """The run's final state (success or failed)."""

        def finished() -> str | None:
            state = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            return state if state in ("success", "failed") else None

        return wait_until(finished, timeout, f"run {run_id} of {dag_id} to finish")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        response = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        return {ti["task_id"]: ti["state"] for ti in response.json()["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
        response = self.api.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": True, "stringify": False},
        )
        response.raise_for_status()
        return response.json()["value"]


@contextlib.contextmanager
def airflow_deployment(
    tmp_path: Path,
    dag_files: list[Path],
    executor: str = "LocalExecutor",
    extra_env: dict[str, str] | None = None,
) -> Iterator[Airflow]:
    """Start the deployment with ``dag_files`` in its dags folder; stop every process after.

    With ``executor="CeleryExecutor"``, a Celery worker runs the tasks, over kombu's SQLAlchemy
    transport on a SQLite file: a broker that needs no server."""
    home = tmp_path / "airflow-home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    for source in dag_files:
        shutil.copy(source, dags / source.name)
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CELERY__BROKER_URL": f"sqla+sqlite:///{home / 'celery-broker.db'}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+sqlite:///{home / 'celery-results.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # Every component signs and checks the task API's tokens with one secret.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "AMORSIZE_EXAMPLE_OUTPUT": str(home / "retraining-output"),
        # XComs over 1 MB in object storage (a folder here; s3:// and gs:// alike), as the
        # README recommends: the example DAG's features (6 MB) reach their next tasks from there.
        "AIRFLOW__CORE__XCOM_BACKEND": (
            "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"
        ),
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": f"file://{home / XCOM_STORAGE}",
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": str(1 << 20),
        **(extra_env or {}),
    }
    subprocess.run([*AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    with Services(home / "logs-of-services", env) as services:
        services.start("api-server", [*AIRFLOW, "api-server", "--port", str(port)])
        services.start("scheduler", [*AIRFLOW, "scheduler"])
        services.start("dag-processor", [*AIRFLOW, "dag-processor"])
        if executor == "CeleryExecutor":
            services.start("celery-worker", [*AIRFLOW, "celery", "worker"])
        base = f"http://127.0.0.1:{port}"
        token = wait_until(
            lambda: _token(base), STARTUP_SECONDS, "the api-server to answer", services.check
        )
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            yield Airflow(api, home, services)


def _token(base: str) -> str | None:
    try:
        response = httpx.get(f"{base}/auth/token", timeout=5)
    except httpx.HTTPError:
        return None
    return response.json()["access_token"] if response.status_code in (200, 201) else None


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    return response.json() if response.status_code == 200 else None
