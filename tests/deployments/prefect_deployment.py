"""A real Prefect 3 deployment for a test: ``prefect server start`` and ``prefect worker start``
on a process work pool, as processes of their own on loopback over a fresh SQLite database;
flows deployed from this repository and run through the REST API."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.deployments.services import Services, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
POOL = "amorsize-test-pool"
STARTUP_SECONDS = 120.0
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
DEPLOY = textwrap.dedent(
    """
    import sys
    from prefect import flow
    source, entrypoint, name, pool = sys.argv[1:]
    deployed = flow.from_source(source=source, entrypoint=entrypoint)
    print(deployed.deploy(name=name, work_pool_name=pool, print_next_steps=False))
    """
)


@dataclass
class Prefect:
    """A running deployment: its REST API, its environment, its services."""

    api: httpx.Client
    env: dict[str, str]
    services: Services

    def deploy(self, entrypoint: str, name: str) -> str:
        """Deploy the flow at ``entrypoint`` (``path:function``, in this repository) to the
        process work pool; return the deployment's id."""
        done = subprocess.run(
            [sys.executable, "-c", DEPLOY, str(REPO), entrypoint, name, POOL],
            env=self.env, capture_output=True, text=True, check=False, cwd=REPO,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"deploying {entrypoint} failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip().splitlines()[-1]

    def run(self, deployment_id: str, parameters: dict[str, Any] | None = None) -> str:
        """Start a flow run of the deployment; return its id."""
        response = self.api.post(
            f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters or {}}
        )
        response.raise_for_status()
        return response.json()["id"]

    def state(self, flow_run_id: str) -> str:
        return self.api.get(f"/flow_runs/{flow_run_id}").json()["state"]["type"]

    def wait_for_run(self, flow_run_id: str, timeout: float) -> str:
        """The run's final state type (COMPLETED, FAILED, CRASHED or CANCELLED)."""

        def final() -> str | None:
            state = self.state(flow_run_id)
            return state if state in FINAL_STATES else None

        return wait_until(final, timeout, f"flow run {flow_run_id} to end", self.services.check)

    def cancel(self, flow_run_id: str) -> None:
        """Cancel the run as the UI does: the worker then kills its process."""
        response = self.api.post(
            f"/flow_runs/{flow_run_id}/set_state",
            json={"state": {"type": "CANCELLING"}, "force": True},
        )
        response.raise_for_status()

    def artifacts(self, flow_run_id: str) -> dict[str, dict[str, Any]]:
        """The artifacts the run published, by key."""
        response = self.api.post(
            "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        )
        response.raise_for_status()
        return {artifact["key"]: artifact for artifact in response.json() if artifact["key"]}


@contextlib.contextmanager
def prefect_deployment(
    tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Prefect]:
    """Start the server and a worker on a process work pool; stop both after."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "AMORSIZE_EXAMPLE_OUTPUT": str(tmp_path / "retraining-output"),
        **(extra_env or {}),
    }
    with Services(tmp_path / "logs-of-services", env) as services:
        services.start(
            "server", [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        )
        wait_until(lambda: _healthy(api_url), STARTUP_SECONDS, "the Prefect server", services.check)
        subprocess.run(
            [*PREFECT, "work-pool", "create", POOL, "--type", "process"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        services.start("worker", [*PREFECT, "worker", "start", "--pool", POOL])
        with httpx.Client(base_url=api_url, timeout=30) as api:
            yield Prefect(api, env, services)


def _healthy(api_url: str) -> bool | None:
    try:
        return True if httpx.get(f"{api_url}/health", timeout=5).status_code == 200 else None
    except httpx.HTTPError:
        return None
