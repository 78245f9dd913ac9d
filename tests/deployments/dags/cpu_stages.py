"""Stages of 5 ms pure-Python calls for the deployment tests: one planned by amorsize-flows and
the same run serially after it; and one that runs until it is killed."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag

from amorsize_flows.airflow import AmorsizeOperator
from tests.workloads import busy, busy_noting_pids

CALL_SECONDS = 0.005
ITEMS = 400
START = pendulum.datetime(2026, 1, 1, tz="UTC")


@dag(dag_id="cpu_stage", schedule=None, start_date=START, catchup=False)
def cpu_stage() -> None:
    planned = AmorsizeOperator(
        task_id="planned", python_callable=busy, items=[CALL_SECONDS] * ITEMS
    )
    serial = AmorsizeOperator(
        task_id="serial", python_callable=busy, items=[CALL_SECONDS] * ITEMS, backend="serial"
    )
    planned >> serial  # one after the other: neither shares the CPUs with the other


@dag(dag_id="endless_stage", schedule=None, start_date=START, catchup=False)
def endless_stage() -> None:
    # Long enough to be killed mid-map; every call notes which process ran it and its parent.
    AmorsizeOperator(
        task_id="endless",
        python_callable=busy_noting_pids,
        items=[0.05] * 100_000,
        op_kwargs={"log_path": os.environ.get("AMORSIZE_TEST_PIDS_FILE", os.devnull)},
        backend="processes",
        n_jobs=2,
        retries=0,
    )


cpu_stage()
endless_stage()
