"""AmorsizeOperator and @task.amorsize under real Airflow: dag.test() on a SQLite metadata DB."""

from __future__ import annotations

import json
import logging
import os
import time
import types
from pathlib import Path

import psutil
import pytest

import amorsize_flows as amz

CONTRACT_KEYS = {"backend", "n_jobs", "chunksize", "estimated_speedup", "reason"}
XCOM_STORAGE = Path(
    os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"].removeprefix("file://")
)


def _workers() -> list[psutil.Process]:
    """Worker processes of this test process (resource trackers live as long as we do)."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(child.cmdline())
    ]


def test_provider_registers_the_decorator() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert "amorsize-flows" in ProvidersManager().providers
    assert "amorsize" in ProvidersManagerTaskRuntime().taskflow_decorators


def test_plans_land_in_xcom_as_plain_json(dagbag, xcoms) -> None:
    run = dagbag.get_dag("amorsize_operator").test()
    assert run.state == "success"
    pushed = xcoms(run)
    for task_id in ("from_xcom", "from_list", "from_callable"):
        plan = pushed[(task_id, "amorsize_plan")]
        assert isinstance(plan, dict) and plan.keys() >= CONTRACT_KEYS
        assert json.loads(json.dumps(plan)) == plan
        assert amz.Plan.from_dict(plan).function.endswith("stage_functions:square")
        record = amz.RunRecord.from_dict(pushed[(task_id, "amorsize_run")])
        assert record.n_items == {"from_xcom": 200, "from_list": 3, "from_callable": 30}[task_id]
        assert not plan["limits"]["cpus_source"].startswith("Airflow")  # one slot says nothing
    limits = pushed[("two_pool_slots", "amorsize_plan")]["limits"]
    if len(os.sched_getaffinity(0)) >= 2:  # fewer CPUs than slots: the affinity sets them
        assert limits["cpus"] == 2
        assert limits["cpus_source"] == "Airflow pool_slots=2 of pool 'default_pool'"


def test_second_run_starts_from_the_first_runs_record(dagbag, xcoms) -> None:
    dag = dagbag.get_dag("amorsize_taskflow")
    first = xcoms(dag.test())[("squared", "amorsize_plan")]
    time.sleep(0.01)  # a later logical date: the first run is a "prior date" of the second
    second_run = dag.test()
    assert second_run.state == "success"
    second = xcoms(second_run)[("squared", "amorsize_plan")]
    assert first["source"] in ("sampled", "history")
    assert second["source"] == "history"
    assert xcoms(second_run)[("squared", "return_value")] == [x * x + 5 for x in range(100)]


def test_large_results_reach_the_next_task_through_object_storage(dagbag, xcoms) -> None:
    # 300 results of 10 kB: over the XCom backend's 1 MB threshold (conftest.py).
    run = dagbag.get_dag("amorsize_large_results").test()
    assert run.state == "success"
    pushed = xcoms(run)
    reference = pushed[("big", "return_value")]
    assert isinstance(reference, str) and str(XCOM_STORAGE) in reference  # the DB keeps a path
    assert any(path.is_file() for path in XCOM_STORAGE.rglob("*"))
    assert pushed[("received", "return_value")] == [300, "7"]  # the list itself, downstream
    assert pushed[("reduced", "return_value")] == sum(x * x for x in range(300))


def test_without_object_storage_large_results_still_return_as_they_are(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amorsize_flows.airflow._results import deliver

    # The operator's own log goes to Airflow's task log; a plain logger stands in for it here.
    operator = types.SimpleNamespace(max_xcom_bytes=100, log=logging.getLogger("the-task"))
    values = ["x" * 50] * 10
    monkeypatch.delenv("AIRFLOW__CORE__XCOM_BACKEND")  # Airflow's default: the metadata DB
    with caplog.at_level(logging.WARNING):
        assert deliver(values, operator) is values  # one return type, whatever the size
    assert "XComObjectStorageBackend" in caplog.text


def test_an_item_error_fails_the_task_naming_the_item(
    dagbag, capfd: pytest.CaptureFixture[str]
) -> None:
    run = dagbag.get_dag("amorsize_failing").test()
    assert run.state == "failed"
    log = "".join(capfd.readouterr())  # dag.test() writes the task log to the console
    assert "the map failed: ValueError('seven is not allowed') amorsize: raised by item 7" in log


def test_a_killed_task_leaves_no_worker_process(dagbag) -> None:
    started = time.monotonic()
    run = dagbag.get_dag("amorsize_killed").test()  # execution_timeout fires mid-map
    assert run.state == "failed"
    assert time.monotonic() - started < 60
    _, alive = psutil.wait_procs(_workers(), timeout=10)
    assert not alive, f"workers survived the kill: {alive}"


def test_decorator_rejects_wrong_calls() -> None:
    from airflow.sdk import dag, task

    with pytest.raises(TypeError, match="multiple_outputs is not supported"):
        task.amorsize(multiple_outputs=True)

    @dag(dag_id="bad_calls", schedule=None)
    def bad_calls():
        @task.amorsize
        def double(x: int) -> int:
            return 2 * x

        double([1, 2], [3, 4])

    with pytest.raises(TypeError, match="one positional argument"):
        bad_calls()


def test_operator_rejects_bad_arguments() -> None:
    from amorsize_flows.airflow import AmorsizeOperator

    with pytest.raises(TypeError, match="`python_callable` must be callable"):
        AmorsizeOperator(task_id="a", python_callable=42, items=[1])
    with pytest.raises(TypeError, match="got a string"):
        AmorsizeOperator(task_id="b", python_callable=abs, items="{{ params.items }}")
    with pytest.raises(ValueError, match="`max_xcom_bytes` must be an int >= 1"):
        AmorsizeOperator(task_id="c", python_callable=abs, items=[1], max_xcom_bytes=0)
    # Planner options fail when the DAG file is loaded, not when the task runs.
    with pytest.raises(ValueError, match="`n_jobs` must be an int >= 1"):
        AmorsizeOperator(task_id="d", python_callable=abs, items=[1], n_jobs=0)
    with pytest.raises(ValueError, match="a memory size must be"):
        AmorsizeOperator(task_id="e", python_callable=abs, items=[1], memory_limit="lots")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        AmorsizeOperator(task_id="f", python_callable=abs, items=[1], backend="gpu")


def test_example_retraining_dag_succeeds_end_to_end(dagbag, xcoms) -> None:
    dag = dagbag.get_dag("digits_ensemble")
    assert dag.timetable.expression in ("@daily", "0 0 * * *")
    run = dag.test()
    assert run.state == "success"
    pushed = xcoms(run)
    stages = ["featurize_train", "featurize_test", "cv_grid", "train_member", "predict"]
    for stage in stages:
        plan = pushed[(stage, "amorsize_plan")]
        assert plan.keys() >= CONTRACT_KEYS, stage
        assert amz.RunRecord.from_dict(pushed[(stage, "amorsize_run")]).n_items > 0
    result = pushed[("evaluate_and_save", "return_value")]
    assert result["accuracy"] > 0.9
    assert json.loads(Path(result["metrics"]).read_text())["accuracy"] == result["accuracy"]
