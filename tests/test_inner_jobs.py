"""Outer workers and a call's own joblib parallelism, planned together: never more than the CPUs."""

from __future__ import annotations

import threading

import joblib  # noqa: F401  (imported as scikit-learn would: the budget applies to loaded joblib)

import amorsize_flows as amz
from amorsize_flows.measure.dry_run import sample
from amorsize_flows.probes.procfs import usable_cpus
from tests.markers import SCHEDULING
from tests.workloads import busy_on_two_threads, joblib_jobs


def test_a_serial_map_gives_each_call_every_cpu_and_workers_their_share() -> None:
    cpus = usable_cpus()
    serial = amz.run(joblib_jobs, range(20), backend="serial")
    assert set(serial.results) == {cpus}
    processes = amz.run(joblib_jobs, range(20), backend="processes", n_jobs=cpus, chunksize=1)
    in_workers = set(processes.results[processes.record.sampled_items :])  # after the dry run's
    # Each worker's share: 1 of cpus workers, or more where the node's slots allowed fewer.
    assert in_workers == {cpus // processes.plan.n_jobs}, processes.plan.reason
    threads = amz.run(joblib_jobs, range(20), backend="threads", n_jobs=2)
    in_threads = set(threads.results[threads.record.sampled_items :])
    assert in_threads == {1}  # joblib's config is per thread: ours get none


def test_outside_a_map_joblib_is_left_as_it_was() -> None:
    amz.execute(joblib_jobs, range(5))
    assert joblib_jobs(None) == 1


@SCHEDULING
def test_the_cpu_of_threads_a_call_starts_is_the_calls_beside_another_thread() -> None:
    # Beside an orchestrator's thread the clock is per thread: a call whose work runs on threads
    # it starts (joblib's threading backend) once read as 97% waiting, and planned many threads.
    # Here the two threads take turns on the GIL: busy, one CPU's worth.
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        dry = sample(busy_on_two_threads, [0.03] * 40, parallelism=(2, 64))
    finally:
        stop.set()
        helper.join()
    assert dry.profile.cpu_ratio > 0.8, dry.profile.cpu_ratio
