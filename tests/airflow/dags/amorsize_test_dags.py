"""DAGs the Airflow tests run with dag.test(): every way of handing items to a stage."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from amorsize_flows.airflow import AmorsizeOperator
from tests.airflow import stage_functions as stages

START = pendulum.datetime(2026, 1, 1, tz="UTC")


@dag(dag_id="amorsize_operator", schedule=None, start_date=START, catchup=False)
def operator_dag():
    @task
    def numbers() -> list[int]:
        return list(range(200))

    from_xcom = AmorsizeOperator(
        task_id="from_xcom", python_callable=stages.square, items=numbers(), op_kwargs={"offset": 1}
    )
    from_list = AmorsizeOperator(
        task_id="from_list", python_callable=stages.square, items=[1, 2, 3]
    )
    from_callable = AmorsizeOperator(
        task_id="from_callable", python_callable=stages.square, items=stages.load_items
    )
    # A task that declares two slots of its pool plans within two CPUs, and says so.
    AmorsizeOperator(
        task_id="two_pool_slots", python_callable=stages.square, items=[4], pool_slots=2
    )

    @task
    def check(squares: list[int], small: list[int], loaded: list[int]) -> None:
        assert squares == [x * x + 1 for x in range(200)], squares[:5]
        assert small == [1, 4, 9]
        assert loaded == [x * x for x in range(30)]

    check(from_xcom.output, from_list.output, from_callable.output)


@dag(dag_id="amorsize_taskflow", schedule=None, start_date=START, catchup=False)
def taskflow_dag():
    @task.amorsize(retries=0, max_workers=2)
    def squared(x: int, offset: int = 0) -> int:
        return stages.square(x, offset)

    @task
    def check(values: list[int]) -> None:
        assert values == [x * x + 5 for x in range(100)]

    check(squared(list(range(100)), offset=5))


@dag(dag_id="amorsize_large_results", schedule=None, start_date=START, catchup=False)
def large_results_dag():
    big = AmorsizeOperator(task_id="big", python_callable=stages.big, items=list(range(300)))

    @task
    def received(values: list[str]) -> list[object]:
        return [len(values), values[7][-1]]

    received(big.output)
    AmorsizeOperator(
        task_id="reduced", python_callable=stages.square, items=list(range(300)), reducer=sum
    )


@dag(dag_id="amorsize_failing", schedule=None, start_date=START, catchup=False)
def failing_dag():
    AmorsizeOperator(
        task_id="fails", python_callable=stages.fail_on_seven, items=list(range(20)), retries=0
    )


operator_dag()
taskflow_dag()
large_results_dag()
failing_dag()


@dag(dag_id="amorsize_killed", schedule=None, start_date=START, catchup=False)
def killed_dag():
    AmorsizeOperator(
        task_id="too_slow",
        python_callable=stages.slow,
        items=list(range(60)),
        op_kwargs={"seconds": 0.5},
        backend="processes",
        n_jobs=2,
        chunksize=1,
        execution_timeout=timedelta(seconds=3),
        retries=0,
    )


killed_dag()
