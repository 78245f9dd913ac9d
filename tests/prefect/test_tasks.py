"""@amorsize_task under a real Prefect server (prefect_test_harness): no mocks of Prefect."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from prefect import flow
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.states import Cancelling
from prefect.variables import Variable

from amorsize_flows.prefect import amorsize_task, variable_name
from amorsize_flows.prefect.artifacts import artifact_key
from tests.prefect import stage_functions as stages
from tests.workloads import busy_then_append_to

CONTRACT_KEYS = {"backend", "n_jobs", "chunksize", "estimated_speedup", "reason"}
REPO = Path(__file__).resolve().parents[2]


def _table(key: str) -> dict:
    artifact = Artifact.get(key)
    assert artifact is not None, f"no artifact {key!r}"
    data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return data[0]


def test_task_options_pass_through(prefect_api: str) -> None:
    bare = amorsize_task(stages.square)
    configured = amorsize_task(retries=2, tags={"ml"}, log_prints=True, timeout_seconds=30)(
        stages.cube
    )
    assert bare.name == "square" and configured.name == "cube"
    assert (configured.retries, configured.tags, configured.log_prints) == (2, {"ml"}, True)
    assert configured.timeout_seconds == 30
    changed = configured.with_options(retries=5, name="cube-5")
    assert (changed.retries, changed.name, changed.tags) == (5, "cube-5", {"ml"})


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"n_jobs": 0}, ValueError, "`n_jobs` must be an int >= 1"),
        ({"memory_limit": "lots"}, ValueError, "a memory size must be"),
        ({"backend": "gpu"}, ValueError, "`backend` must be one of"),
        ({"progress": "yes"}, TypeError, "`progress` must be True, False or None"),
    ],
)
def test_bad_map_options_fail_when_the_task_is_declared(
    options: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        amorsize_task(**options)(stages.square)
    with pytest.raises(error, match=message):
        amorsize_task(stages.square).with_options(**options)


def test_plan_artifact_and_results(prefect_api: str) -> None:
    scaled = amorsize_task(stages.scaled)

    @flow
    def pipeline() -> tuple[list[int], list[int]]:
        direct = scaled(list(range(50)), factor=3, offset=1)
        submitted = scaled.submit(list(range(10)), factor=2).result()
        return direct, submitted

    direct, submitted = pipeline()
    assert direct == [3 * x + 1 for x in range(50)]
    assert submitted == [2 * x for x in range(10)]
    row = _table(artifact_key("scaled"))
    assert row.keys() >= CONTRACT_KEYS
    assert row["function"].endswith("stage_functions:scaled")


def test_under_a_dask_task_runner_the_map_keeps_to_its_worker(prefect_api: str) -> None:
    # Prefect's DaskTaskRunner on a real in-process cluster of one single-threaded worker: the
    # map inside the task may use that worker's one thread, not the node's CPUs.
    prefect_dask = pytest.importorskip("prefect_dask")
    spin = amorsize_task(stages.spin).with_options(name="spin-on-dask", history=False)
    runner = prefect_dask.DaskTaskRunner(
        cluster_kwargs={
            "n_workers": 1,
            "threads_per_worker": 1,
            "processes": False,
            "dashboard_address": None,
        }
    )

    @flow(task_runner=runner)
    def on_dask() -> list[int]:
        return spin.submit(list(range(60)), seconds=0.005).result()

    assert on_dask() == list(range(60))
    row = _table(artifact_key("spin-on-dask"))
    assert row["cpus"] == 1
    assert row["backend"] != "processes"


def test_second_run_starts_from_the_stored_record(prefect_api: str) -> None:
    spin = amorsize_task(stages.spin).with_options(name="spin-history")

    @flow
    def twice() -> list[int]:
        return spin(list(range(40)), seconds=0.002)

    twice()
    assert _table(artifact_key("spin-history"))["source"] == "sampled"
    assert twice() == list(range(40))
    assert _table(artifact_key("spin-history"))["source"] == "history"


def test_two_flows_with_a_task_of_the_same_name_keep_a_record_each(prefect_api: str) -> None:
    spin = amorsize_task(stages.spin).with_options(name="spin-shared")

    @flow(name="first-flow")
    def first() -> list[int]:
        return spin(list(range(20)), seconds=0.002)

    @flow(name="second-flow")
    def second() -> list[int]:
        return spin(list(range(30)), seconds=0.002)

    first()
    second()
    kept = {
        name: Variable.get(variable_name("spin-shared", name))
        for name in ("first-flow", "second-flow")
    }
    assert kept["first-flow"]["record"]["n_items"] == 20, kept
    assert kept["second-flow"]["record"]["n_items"] == 30, kept


def test_example_flow_succeeds(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMORSIZE_EXAMPLE_OUTPUT", str(tmp_path))
    spec = importlib.util.spec_from_file_location(
        "digits_ensemble_flow", REPO / "flows" / "digits_ensemble.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.digits_ensemble(n_members=2, batch_size=100)
    assert result["accuracy"] > 0.9
    assert json.loads(Path(result["metrics"]).read_text())["accuracy"] == result["accuracy"]
    for stage in module.PARALLEL_STAGES:
        assert _table(artifact_key(stage.name)).keys() >= CONTRACT_KEYS, stage.name


def test_cancelled_flow_run_leaves_no_worker(prefect_api: str, tmp_path: Path) -> None:
    slow = amorsize_task(backend="processes", n_jobs=2, chunksize=1, history=False)(
        stages.record_pid_and_nap
    )

    @flow(name="to-cancel")
    def to_cancel() -> list[int]:
        return slow(list(range(200)), pid_dir=str(tmp_path), seconds=0.5)

    runner = threading.Thread(target=lambda: to_cancel(return_state=True), daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while len(os.listdir(tmp_path)) < 2 and time.monotonic() < deadline:  # workers are mapping
        time.sleep(0.1)
    assert len(os.listdir(tmp_path)) >= 2, "the map never started in worker processes"
    with get_client(sync_client=True) as client:
        run = next(
            r for r in client.read_flow_runs() if r.name and r.flow_id and r.state.is_running()
        )
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    runner.join(timeout=60)
    assert not runner.is_alive(), "the flow run did not stop after cancellation"
    worker_pids = {int(name) for name in os.listdir(tmp_path)} - {os.getpid()}
    deadline = time.monotonic() + 15
    while (
        any(
            psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            for pid in worker_pids
        )
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    alive = [
        pid
        for pid in worker_pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert not alive, f"workers survived the cancellation: {alive}"


def test_a_partial_is_a_stage_named_after_its_function(prefect_api: str) -> None:
    # functools.partial has no __name__: the stage is named after the function it calls.
    stage = amorsize_task(functools.partial(busy_then_append_to, log_path=os.devnull))
    assert stage.name == "busy_then_append_to"

    @flow
    def partial_flow() -> list[int]:
        return stage(list(range(20)))

    assert partial_flow() == list(range(20))
