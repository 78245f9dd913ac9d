"""Waiting for a CPU is not waiting on I/O: busy calls on a CPU that another process keeps busy
too take twice their CPU time, and must still read as busy, not as calls threads could overlap.
The contention is real: a spinning process pinned to each CPU. So are the waits no run queue
shows (the host's steal): stood in for by the same contention with schedstat hidden, as a kernel
without schedstats hides it, where only the thread's count of its blocks tells them apart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import amorsize_flows as amz
from amorsize_flows.measure.calibration import get_calibration
from amorsize_flows.measure.dry_run import sample
from amorsize_flows.measure.profile import Profile
from amorsize_flows.probes import run_queue
from amorsize_flows.probes.run_queue import SCHEDSTAT, blocks, cpu_ratio, queued_seconds
from tests.markers import SCHEDULING
from tests.workloads import busy, busy_where, sleepy

NEEDS_SCHEDSTAT = pytest.mark.skipif(
    not os.path.exists(SCHEDSTAT), reason="the kernel does not report waits for a CPU"
)

SPIN = "import os\nos.sched_setaffinity(0, {%d})\nprint(flush=True)\nwhile True: pass\n"


@pytest.fixture
def spinning_cpus() -> Iterator[set[int]]:
    """A process spinning on each CPU this process may use, pinned to it. Calibrated first:
    the machine's costs are not what these tests measure, nor is a 9 s calibration beside them."""
    get_calibration()
    allowed = os.sched_getaffinity(0)
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN % cpu], stdout=subprocess.PIPE)
        for cpu in sorted(allowed)
    ]
    try:
        for spinner in spinners:
            assert spinner.stdout is not None
            spinner.stdout.readline()  # pinned, and about to spin
        yield allowed
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@pytest.fixture
def schedstat_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits for a CPU go unseen, as the host's steal does: as on a kernel without schedstats."""
    monkeypatch.setattr(run_queue, "queued_seconds", lambda: 0.0)


@pytest.fixture
def shared_cpu(spinning_cpus: set[int]) -> Iterator[None]:
    """This thread pinned to one CPU, which a spinning process keeps busy too."""
    os.sched_setaffinity(0, {min(spinning_cpus)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, spinning_cpus)


def _cpu_share_of(work: float) -> tuple[float, float]:
    """The calling thread's CPU seconds per wall second over ``work`` seconds of busy(), and the
    seconds it waited for a CPU meanwhile."""
    wall, cpu, queued = time.perf_counter(), time.thread_time(), queued_seconds()
    busy(work)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return cpu / wall, queued_seconds() - queued


@pytest.mark.parametrize(
    ("cpu", "wall", "queued", "ratio"),
    [
        (0.5, 1.0, 0.5, 1.0),  # one busy thread, queued half the time
        (0.2, 1.0, 0.0, 0.2),  # mostly waiting on I/O
        (0.2, 1.0, 0.4, 1 / 3),  # both
        (1.8, 1.0, 0.0, 1.8),  # threads of its own (BLAS)
        # CPU time the clock over-counts is not made more of by the waits (1.57 otherwise).
        (1.1, 1.0, 0.3, 1.1),
    ],
)
def test_waits_for_a_cpu_count_as_busy_up_to_one_cpu(
    cpu: float, wall: float, queued: float, ratio: float
) -> None:
    assert cpu_ratio(cpu, wall, queued) == pytest.approx(ratio)


NEEDS_BLOCKS = pytest.mark.skipif(
    blocks() is None, reason="the platform does not count a thread's blocks"
)


@NEEDS_BLOCKS
def test_a_thread_s_blocks_count_its_sleeps_and_not_its_work() -> None:
    before = blocks()
    assert before is not None
    busy(0.05)
    after_work = blocks()
    for _ in range(5):
        time.sleep(1e-3)
    assert after_work == before
    assert blocks() - after_work >= 5  # type: ignore[operator]


@NEEDS_BLOCKS
def test_wall_time_of_a_thread_that_never_blocked_is_time_kept_from_a_cpu(
    schedstat_hidden: None,
) -> None:
    mark = run_queue.mark()
    busy(0.01)
    # Wall and CPU seconds as a stretch the host slowed would read.
    assert run_queue.queued_since(mark, 0.05, 0.01) == pytest.approx(0.04)
    time.sleep(1e-3)
    assert run_queue.queued_since(mark, 0.05, 0.01) == 0.0  # it blocked: the rest was a wait


@NEEDS_SCHEDSTAT
def test_a_thread_sharing_its_cpu_counts_its_wait_for_it(shared_cpu: None) -> None:
    share, queued = _cpu_share_of(0.2)
    assert share < 0.8  # the spinner took its turns
    assert queued > 0.05


@NEEDS_SCHEDSTAT
def test_a_forked_child_reads_its_own_waits_not_its_parent_s(shared_cpu: None) -> None:
    _cpu_share_of(0.2)
    parent = queued_seconds()
    assert parent > 0.05
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(writing, repr(queued_seconds()).encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    with os.fdopen(reading) as pipe:
        assert float(pipe.read()) < parent / 2


@SCHEDULING
@NEEDS_SCHEDSTAT
def test_busy_calls_on_a_shared_cpu_read_as_busy(shared_cpu: None) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    dry = sample(busy, [2e-3] * 60, processes_possible=False)
    plain_share = (time.thread_time() - cpu) / (time.perf_counter() - wall)
    assert plain_share < 0.8  # read as before, a fifth of the time or more went waiting
    # About 1.0; 0.84 once in a CI run before a thread that never blocked was read as kept from
    # its CPU whatever schedstat saw. Read as before, about 0.5.
    assert dry.profile.cpu_ratio > 0.9


@SCHEDULING
@NEEDS_BLOCKS
def test_busy_calls_kept_from_a_cpu_unseen_read_as_busy_and_sleepy_ones_as_waiting(
    shared_cpu: None, schedstat_hidden: None
) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    dry = sample(busy, [2e-3] * 60, processes_possible=False)
    assert (time.thread_time() - cpu) / (time.perf_counter() - wall) < 0.8  # the spinner's turns
    # About 0.5 when every wall second beyond the CPU's was taken for a wait.
    assert dry.profile.cpu_ratio > 0.9
    assert sample(sleepy, [2e-3] * 20, processes_possible=False).profile.cpu_ratio < 0.5


@SCHEDULING
@NEEDS_BLOCKS
def test_a_serial_map_kept_from_a_cpu_unseen_records_its_calls_as_busy(
    shared_cpu: None, schedstat_hidden: None
) -> None:
    record = amz.run(busy, [2e-3] * 100, plan=amz.Plan.fixed("serial")).record
    assert record.seconds_per_item > 3e-3  # the spinner took its turns
    # The next run's plan reads this as the calls' CPU share; about 0.5 when counted as waits.
    assert record.cpu_seconds_per_item / record.seconds_per_item > 0.9


@NEEDS_SCHEDSTAT
def test_busy_calls_on_busy_cpus_go_to_no_threads_in_a_one_cpu_pod(
    one_cpu_pod: None, spinning_cpus: set[int]
) -> None:
    # Two CPUs' affinity plans processes, and the pod's quota of one CPU rules them out: read as
    # waits, the third of their time the calls queued for a CPU sent them to 2 to 4 threads.
    outcome = amz.run(busy_where, [3e-3] * 100)
    assert outcome.plan.backend == "serial", outcome.plan.reason
    assert {pid for _, pid in outcome.results} == {os.getpid()}
    assert Profile.from_dict(outcome.record.profile).cpu_ratio > 0.85
