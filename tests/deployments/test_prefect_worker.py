"""Prefect 3 as users deploy it: ``prefect server start``, a process work pool and
``prefect worker start``, each a process of its own on loopback; the example flow deployed from
this repository and run through the REST API, twice (the second from the first one's records);
and a flow run cancelled through the API, which must leave no map worker behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prefect")

from tests.deployments.prefect_deployment import Prefect, prefect_deployment
from tests.deployments.services import map_workers, wait_for_exit, wait_until

pytestmark = pytest.mark.deployment

STAGES = ("featurize-train", "featurize-test", "cv-score", "train-member", "predict-batch")
RUN_SECONDS = 600.0
WORKER_EXIT_SECONDS = 30.0


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prefect, Path]]:
    tmp_path = tmp_path_factory.mktemp("prefect-worker")
    pids = tmp_path / "pids.txt"
    with prefect_deployment(tmp_path, {"AMORSIZE_TEST_PIDS_FILE": str(pids)}) as deployment:
        yield deployment, pids


@pytest.mark.timeout(900)
def test_the_example_flow_runs_on_a_worker_and_its_next_run_plans_from_records(
    prefect: tuple[Prefect, Path],
) -> None:
    server, _ = prefect
    deployment = server.deploy("flows/digits_ensemble.py:digits_ensemble", "daily")
    tables = []
    for _ in range(2):
        run = server.run(deployment)
        assert server.wait_for_run(run, RUN_SECONDS) == "COMPLETED", server.services.log("worker")
        artifacts = server.artifacts(run)
        tables.append({stage: artifacts[f"amorsize-{stage}"]["description"] for stage in STAGES})
    assert all("a dry run on this worker" in table for table in tables[0].values()), tables[0]
    assert all("the previous run's record" in table for table in tables[1].values()), tables[1]


@pytest.mark.timeout(600)
def test_a_flow_run_cancelled_through_the_api_leaves_no_map_worker(
    prefect: tuple[Prefect, Path],
) -> None:
    server, pids = prefect
    deployment = server.deploy("tests/deployments/flows/endless.py:endless_stage", "endless")
    run = server.run(deployment)
    _, workers = wait_until(lambda: map_workers(pids), 180, "the endless map's two workers")
    server.cancel(run)
    assert server.wait_for_run(run, 120) == "CANCELLED", server.services.log("worker")
    wait_for_exit(workers, WORKER_EXIT_SECONDS, "the map workers of the cancelled flow run")
