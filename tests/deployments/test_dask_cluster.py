"""A map inside a task of a real Dask cluster: the nanny starts its workers as daemonic processes
(``distributed.worker.daemon`` defaults to True), and the task's map still runs on processes."""

from __future__ import annotations

import os

import pytest

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.deployment


def map_in_a_dask_task() -> dict[str, object]:
    """What a user's Dask task does: map a CPU-bound function with amorsize-flows."""
    import multiprocessing

    import amorsize_flows as amz
    from tests.workloads import busy_where

    run = amz.run(busy_where, [0.003] * 400)
    return {
        "daemonic": multiprocessing.current_process().daemon,
        "backend": run.plan.backend,
        "n_jobs": run.plan.n_jobs,
        "reason": run.plan.reason,
        "limits": run.plan.limits,
        "task_pid": os.getpid(),
        "pids": sorted({pid for _, pid in run.results}),
    }


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
@pytest.mark.timeout(180)
def test_a_task_on_a_daemonic_dask_worker_maps_on_processes() -> None:
    # One worker given the node's two CPUs (nthreads=2): a map plans within its worker's share.
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        outcome = client.submit(map_in_a_dask_task, pure=False).result(timeout=150)
        worker_pids = set(client.run(os.getpid).values())
    assert outcome["daemonic"] is True, outcome  # the situation of dask/distributed#2142
    assert outcome["task_pid"] in worker_pids
    assert outcome["limits"]["cpus"] == 2, outcome
    assert (outcome["backend"], outcome["n_jobs"]) == ("processes", 2), outcome
    # The dry run's calls ran in the task's process (their results are kept), the rest in two
    # children of it.
    assert len(set(outcome["pids"]) - {outcome["task_pid"]}) == 2, outcome
