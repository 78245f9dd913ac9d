"""The cost model, on synthetic profiles and a fixed calibration: pure, so no clocks here."""

from __future__ import annotations

from dataclasses import replace

import pytest

from amorsize_flows.decide import in_flight
from amorsize_flows.decide.model import choose
from amorsize_flows.decide.situation import Constraints, Situation
from amorsize_flows.measure.calibration import Calibration
from amorsize_flows.measure.limits import WorkerLimits
from amorsize_flows.measure.profile import Profile

GIB = 1 << 30
# Costs of the order measured on a 2-core Linux machine (see measure/calibration.py).
CALIBRATION = Calibration(
    fork_start=(0.008, 0.004),
    loky_start=(0.08, 0.01),
    process_task_seconds=1e-4,
    process_task_loaded_seconds=3e-4,
    thread_start=(1e-4, 1e-4),
    thread_task_seconds=2.5e-5,
    pipe_bytes_per_second=7e8,
    worker_memory_bytes=20 << 20,
)


def limits(
    cpus: int = 2, memory: int = 16 * GIB, daemonic: bool = False, source: str = "CPU affinity"
) -> WorkerLimits:
    return WorkerLimits(cpus, source, memory, "test", daemonic=daemonic)


def profile(seconds: float, cpu_ratio: float = 1.0, **extra) -> Profile:
    values = dict(
        first_call_seconds=seconds,
        seconds_per_item=seconds,
        cpu_seconds_per_item=seconds * cpu_ratio,
    )
    values.update(extra)
    return Profile(**values)


def situation(prof: Profile, n: int, **extra) -> Situation:
    values = dict(limits=limits(), calibration=CALIBRATION, n_remaining=n, n_items=n)
    values.update(extra)
    return Situation(prof, **values)


def test_cheap_function_runs_serially() -> None:
    # Pickling a small int and back costs about as much as the call itself.
    plan = choose(
        situation(profile(1e-6, pickle_seconds_in=5e-7, pickle_seconds_out=5e-7), 300_000)
    )
    assert plan.backend == "serial"
    assert plan.estimated_speedup == pytest.approx(1.0)
    assert plan.reason.startswith("Serial")


def test_cpu_bound_work_uses_every_cpu_in_processes() -> None:
    plan = choose(situation(profile(0.005), 1000))
    assert (plan.backend, plan.n_jobs, plan.start_method) == ("processes", 2, "fork")
    assert 1.7 < plan.estimated_speedup <= 2.0
    assert plan.candidates[0].predicted_seconds <= plan.candidates[-1].predicted_seconds


def test_waiting_work_uses_more_threads_than_cpus() -> None:
    plan = choose(situation(profile(0.01, cpu_ratio=0.01), 500))
    assert plan.backend == "threads"
    assert plan.n_jobs > 2
    assert "waiting" in plan.reason


def test_many_threads_start_while_the_first_already_work() -> None:
    # Starting a thread took half a millisecond here: 64 take 32 ms. The first threads run
    # chunks while the last start, so small chunks lose about half of that ramp (300 waits of
    # 10 ms on 64 threads took 65 ms through a bare executor, where 32 ms of starts and then five
    # rounds of 10 ms would say 82); a chunk that the last thread takes runs after all of it.
    slow_starts = replace(CALIBRATION, thread_start=(0.0, 5e-4))
    waits = situation(profile(0.01, cpu_ratio=0.001, gil_share=0.001), 300, calibration=slow_starts)

    def predicted(chunksize: int) -> float:
        plan = choose(waits, Constraints("threads", 64, chunksize))
        return float(plan.to_dict()["predicted_seconds"])

    assert 0.05 + 0.016 < predicted(1) < 0.05 + 0.032
    assert predicted(5) > 0.032 + 0.05 > predicted(1)


def test_gil_free_calls_on_threads_get_chunks_that_spare_the_hand_offs() -> None:
    # 40 µs of hashing 64 KB without the GIL: pickling rules processes out; each hand-off to a
    # thread is 25 µs of Python that holds the GIL and a CPU, so chunks of one or two would lose.
    hashing = profile(4e-5, gil_share=0.05, bytes_in_per_item=65_600, pickle_seconds_in=3e-5)
    plan = choose(situation(hashing, 2000))
    assert plan.backend == "threads"
    assert plan.chunksize >= 50, plan.candidates[:3]


def test_never_more_processes_than_cpus() -> None:
    for cpus in (1, 2, 3, 8):
        plan = choose(situation(profile(0.05), 10_000, limits=limits(cpus=cpus)))
        assert plan.n_jobs <= cpus or plan.backend == "threads"
        assert all(c.n_jobs <= cpus for c in plan.candidates if c.backend == "processes")


def test_caller_cap_applies_to_threads_too() -> None:
    plan = choose(
        situation(
            profile(0.01, cpu_ratio=0.01), 500, limits=limits(cpus=3, source="AMORSIZE_MAX_WORKERS")
        )
    )
    assert plan.n_jobs <= 3


def test_memory_limits_workers() -> None:
    heavy = profile(0.05, warm_memory_bytes=3 * GIB)
    plan = choose(situation(heavy, 1000, limits=limits(cpus=8, memory=8 * GIB)))
    assert plan.backend != "processes" or plan.n_jobs <= 2
    assert "memory" in plan.reason


def test_a_daemonic_process_plans_processes_and_says_so() -> None:
    plan = choose(situation(profile(0.005), 1000, limits=limits(daemonic=True)))
    assert plan.backend == "processes"
    assert "daemonic" in plan.reason


def test_unpicklable_function_plans_no_processes() -> None:
    prof = profile(0.005, picklable=False, not_picklable_reason="the function does not pickle")
    plan = choose(situation(prof, 1000))
    assert plan.backend != "processes"
    assert "does not pickle" in plan.reason


def test_threaded_caller_pays_for_fresh_workers_and_their_warmup() -> None:
    prof = profile(0.001, first_call_seconds=0.5)  # a model loaded on the first call
    forked = choose(situation(prof, 2000))
    fresh = choose(situation(prof, 2000, fork_safe=False))
    assert forked.start_method == "fork"
    assert fresh.backend == "serial" or fresh.start_method == "loky"
    assert fresh.predicted_seconds > forked.predicted_seconds


def test_internally_threaded_work_gains_nothing_from_processes() -> None:
    plan = choose(situation(profile(0.01, cpu_ratio=2.0), 200))
    assert plan.backend == "serial"


def test_a_larger_required_gain_keeps_a_modest_parallel_plan_serial() -> None:
    # 80 calls of 5 ms beside a thread: loky workers would save about a quarter. A plan made from
    # a serial run's record asks for a third (1.5x), since one run's timing is noisy.
    usual = choose(situation(profile(0.005), 80, fork_safe=False))
    assert usual.backend == "processes" and 1.2 < usual.estimated_speedup < 1.5
    wary = choose(situation(profile(0.005), 80, fork_safe=False, min_gain=1 / 3))
    assert wary.backend == "serial"
    assert "would save under 33%" in wary.reason
    clear = choose(situation(profile(0.005), 200, fork_safe=False, min_gain=1 / 3))
    assert clear.backend == "processes" and clear.estimated_speedup >= 1.5


def test_large_inputs_with_little_work_stay_serial() -> None:
    mb = 1 << 20
    prof = profile(2e-4, bytes_in_per_item=mb, pickle_seconds_in=1e-3)
    assert choose(situation(prof, 200)).backend == "serial"


def test_skew_prefers_smaller_chunks() -> None:
    even = choose(situation(profile(0.002), 2000))
    skewed = choose(situation(profile(0.002, seconds_stdev=0.01), 2000))
    assert skewed.chunksize <= even.chunksize
    assert skewed.chunksize < 2000 / 2 / 4  # several chunks per worker to even out the tail


def test_costly_calls_get_several_chunks_per_worker_against_sorted_inputs() -> None:
    # Even 7 ms calls, as the first 3 items of an input sorted by size show: one chunk per
    # worker for the other 297 is predicted barely faster (no chunk size splits 297 evenly into
    # more), and would leave a worker with all of the largest items.
    plan = choose(situation(profile(0.007), 297))
    assert plan.backend == "processes"
    assert -(-297 // plan.chunksize) >= 4 * plan.n_jobs


def test_fewer_chunks_per_worker_where_each_hand_off_is_costly() -> None:
    # 10 ms per hand-off (a slow machine) against 0.2 s of work: insurance would cost 15%.
    costly = replace(CALIBRATION, process_task_seconds=0.01, process_task_loaded_seconds=0.01)
    plan = choose(situation(profile(2e-4), 1000, calibration=costly))
    assert plan.backend == "processes"
    assert -(-1000 // plan.chunksize) < 4 * plan.n_jobs


def test_constraints_are_obeyed() -> None:
    plan = choose(
        situation(profile(0.005), 1000), Constraints(backend="threads", n_jobs=3, chunksize=7)
    )
    assert (plan.backend, plan.n_jobs, plan.chunksize) == ("threads", 3, 7)


def test_forced_processes_are_clamped_to_cpus() -> None:
    plan = choose(situation(profile(0.005), 1000), Constraints(backend="processes", n_jobs=16))
    assert plan.n_jobs == 2
    assert "lowered" in plan.reason


def test_dry_run_time_counts_in_the_estimate() -> None:
    without = choose(situation(profile(0.005), 400))
    with_spent = choose(situation(profile(0.005), 400, spent_seconds=1.0))
    assert with_spent.estimated_speedup < without.estimated_speedup
    assert with_spent.predicted_seconds == pytest.approx(without.predicted_seconds + 1.0)


def test_what_the_last_process_map_took_beyond_the_model_counts_in_the_next_plan() -> None:
    # 18 calls of 12 ms: two forked workers look like 1.8x, but on a real Airflow deployment the
    # stage's process map took about 0.2 s more than predicted; counted, a loop is cheaper.
    fresh = choose(situation(profile(0.012), 18))
    assert fresh.backend == "processes"
    assert "not yet measured from this process" in fresh.reason
    taught = choose(situation(profile(0.012), 18, unmodelled_process_seconds=0.2))
    assert taught.backend == "serial", taught.reason
    assert taught.unmodelled_process_seconds == 0.2
    assert "200.0 ms more" in taught.reason
    # On a long stage the same 0.2 s is small: processes still win.
    long = choose(situation(profile(0.012), 2000, unmodelled_process_seconds=0.2))
    assert long.backend == "processes" and long.estimated_speedup > 1.7


@pytest.mark.parametrize("item_mib", [1, 4, 16])
def test_the_chunks_a_plan_keeps_in_flight_fit_in_memory(item_mib: int) -> None:
    # The runner keeps in_flight.chunks_per_worker chunks per worker, 4 at least: counted as 2,
    # a plan on 16 MiB items held more than the memory it was given.
    item_bytes = item_mib << 20
    memory = 512 << 20
    prof = profile(0.02, bytes_in_per_item=item_bytes, pickle_seconds_in=item_bytes / 2e9)
    plan = choose(situation(prof, 1000, limits=limits(cpus=8, memory=memory)))
    assert plan.backend == "processes"
    chunks = in_flight.chunks_per_worker(plan.chunksize, item_bytes)
    held = plan.n_jobs * (chunks * plan.chunksize * item_bytes + CALIBRATION.worker_memory_bytes)
    assert held <= memory, (plan.n_jobs, plan.chunksize, chunks)
