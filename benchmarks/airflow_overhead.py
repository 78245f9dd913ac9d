"""What ``@task.amorsize`` adds to an Airflow stage, against a ``@task`` with a hand-picked pool.

One Airflow run (``dag.test()`` on a SQLite metadata DB in a temporary AIRFLOW_HOME) per
repetition, both stages side by side in the same DAG run, for three shapes: a cheap function,
5 ms of CPU per item, and 10 ms waits per item. The hand-picked stage is what a user would write
after tuning by hand: a plain loop, ``ProcessPoolExecutor(2).map(chunksize=50)`` and
``ThreadPoolExecutor(64).map``. Durations are the task instances' own (start to end in the
metadata DB). The first repetition of the amorsize stage samples; later ones start from the
previous run's record, as a scheduled pipeline does. The bar: at most 5% or 0.3 s added. A task
that does nothing runs before both: the first task instance of a ``dag.test()`` process pays about
3 s of Airflow's own start-up, which would otherwise land on whichever stage happens to run first.

Run: ``python -m benchmarks.airflow_overhead [--repeat 4]``; writes
``benchmarks/results/airflow_overhead.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.overhead_report import write_report

RESULTS = Path(__file__).parent / "results" / "airflow_overhead.md"

DAG_FILE = textwrap.dedent(
    """
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    import pendulum
    from airflow.sdk import dag, task

    from benchmarks import workloads as w

    SHAPES = {
        "cheap": (w.square_plus_one, 300_000, None),
        "cpu": (w.burn_5ms, 400, ("processes", 2, 50)),
        "io": (w.wait_10ms, 300, ("threads", 64, 1)),
    }


    def hand_picked(name, items):
        func, _, pool = SHAPES[name]
        if pool is None:
            return [func(x) for x in items]
        kind, workers, chunksize = pool
        executor = ProcessPoolExecutor if kind == "processes" else ThreadPoolExecutor
        with executor(workers) as running:
            return list(running.map(func, items, chunksize=chunksize))


    def warm_up():
        pass  # runs first, and pays what the first task of a process pays Airflow


    @dag(dag_id="overhead", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
    def overhead():
        first = task(task_id="warm_up")(warm_up)()
        for name, (func, n, _) in SHAPES.items():
            # Both stages get their items the same way: as an argument Airflow renders.
            first >> task(task_id=f"hand_picked_{name}")(hand_picked)(name, list(range(n)))
            first >> task.amorsize(task_id=f"amorsize_{name}", max_xcom_bytes=64 << 20)(func)(
                list(range(n))
            )


    overhead()
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="amorsize-airflow-bench-"))
    (home / "dags").mkdir()
    (home / "dags" / "overhead_dag.py").write_text(DAG_FILE)
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
    )
    sys.path.insert(0, str(Path.cwd()))
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils import db
    from airflow.utils.session import create_session

    db.resetdb()
    dag = DagBag(str(home / "dags")).get_dag("overhead")
    durations: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        run = dag.test()
        assert run.state == "success", run.state
        with create_session() as session:
            for ti in session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id):
                assert ti.start_date is not None and ti.end_date is not None, ti.task_id
                seconds = (ti.end_date - ti.start_date).total_seconds()
                durations.setdefault(ti.task_id, []).append(seconds)
        time.sleep(0.01)
    shutil.rmtree(home, ignore_errors=True)
    _report(durations, args.repeat)


def _report(durations: dict[str, list[float]], repeat: int) -> None:
    intro = (
        f"`python -m benchmarks.airflow_overhead --repeat {repeat}`: task-instance durations "
        "(seconds) under `dag.test()`, both stages in the same DAG runs. First run: the amorsize "
        "stage samples; later runs: it starts from the previous run's record. A task that does "
        "nothing runs first and takes Airflow's one-time start-up (about 3 s) on itself."
    )
    print(
        write_report(
            RESULTS,
            "Airflow: what `@task.amorsize` adds to a stage",
            intro,
            ("cheap", "cpu", "io"),
            durations,
            ("hand_picked_{}", "amorsize_{}"),
        )
    )


if __name__ == "__main__":
    main()
