"""The node-wide lease of worker slots: lock files shared by processes, crash-safe, and maps
started together that share the node's CPUs instead of each taking all of them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import amorsize_flows as amz
from amorsize_flows.execution.lease import SHARE_NODE_ENV
from amorsize_flows.measure.calibration import get_calibration
from amorsize_flows.probes.lock_files import RUNTIME_DIR_ENV, SlotFiles
from tests.markers import SCHEDULING
from tests.workloads import busy, busy_at_priority, busy_failing_at

ROOT = Path(__file__).resolve().parent.parent
HOLD_SLOTS = """
import sys, time
from amorsize_flows.probes.lock_files import SlotFiles
slots = SlotFiles(sys.argv[1], int(sys.argv[2]))
print(slots.take(int(sys.argv[3])), flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def slots_held(directory: Path, count: int, held: int) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``held`` of ``count`` slots in ``directory`` until it is killed
    (at the latest when the block ends)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SLOTS, str(directory), str(count), str(held)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and int(holder.stdout.readline()) == held
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_process_takes_only_free_slots(tmp_path: Path) -> None:
    with slots_held(tmp_path, 3, 2):
        mine = SlotFiles(str(tmp_path), 3)
        assert mine.free() == 1
        assert mine.take(3) == 1
        mine.release()


def test_slots_of_a_killed_holder_are_free_again(tmp_path: Path) -> None:
    with slots_held(tmp_path, 2, 2) as holder:
        assert SlotFiles(str(tmp_path), 2).free() == 0
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert SlotFiles(str(tmp_path), 2).free() == 2


def test_two_maps_of_one_process_do_not_share_a_slot(tmp_path: Path) -> None:
    # POSIX locks belong to the process: without the registry both would "get" slot 0.
    first, second = SlotFiles(str(tmp_path), 2), SlotFiles(str(tmp_path), 2)
    assert first.take(2) == 2
    assert second.take(2) == 0
    first.keep(1)
    assert second.take(2) == 1
    second.release()
    first.release()
    assert SlotFiles(str(tmp_path), 2).free() == 2


MAP = """
import json, sys
import amorsize_flows as amz
from tests.workloads import busy
run = amz.run(busy, [0.002] * 500)
assert run.results == [0.002] * 500
print(json.dumps({"backend": run.plan.backend, "n_jobs": run.plan.n_jobs,
                  "reason": run.plan.reason}))
"""


def _four_maps_together(tmp_path: Path, share: str) -> tuple[int, list[dict[str, object]]]:
    """Start four CPU-bound maps at once; return the most worker processes alive at one time
    (sampled) and each map's plan."""
    env = dict(os.environ, **{RUNTIME_DIR_ENV: str(tmp_path), SHARE_NODE_ENV: share})
    get_calibration()  # measured now if need be: its subprocess would count as a worker
    maps = [
        subprocess.Popen(
            [sys.executable, "-c", MAP], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        for _ in range(4)
    ]
    most = 0
    while any(process.poll() is None for process in maps):
        alive = 0
        for process in maps:
            with contextlib.suppress(psutil.NoSuchProcess):
                alive += len(psutil.Process(process.pid).children())
        most = max(most, alive)
        time.sleep(0.01)
    outputs = [process.communicate()[0] for process in maps]
    assert all(process.returncode == 0 for process in maps), outputs
    return most, [json.loads(output.splitlines()[-1]) for output in outputs]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_four_maps_started_together_share_the_node(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    most, plans = _four_maps_together(tmp_path, "1")
    assert most <= cpus, (most, plans)
    assert sum(plan["backend"] == "processes" for plan in plans) >= 1, plans


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_without_the_lease_each_map_plans_for_every_cpu(tmp_path: Path) -> None:
    # What the lease prevents, shown on the same maps: the test above could fail.
    most, plans = _four_maps_together(tmp_path, "0")
    assert most > len(os.sched_getaffinity(0)), (most, plans)


def test_a_map_given_fewer_slots_than_it_wanted_says_so(tmp_path: Path) -> None:
    env = dict(os.environ, **{RUNTIME_DIR_ENV: str(tmp_path)})
    cpus = len(os.sched_getaffinity(0))
    with slots_held(tmp_path, cpus, cpus - 1):
        code = MAP.replace(
            '"reason": run.plan.reason', '"reason": run.plan.reason, "limits": run.plan.limits'
        )
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        plan = json.loads(done.stdout.splitlines()[-1])
        assert plan["n_jobs"] == 1, plan
        assert plan["limits"]["cpus"] == 1 and "node lease" in plan["limits"]["cpus_source"], plan


@SCHEDULING
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_map_that_finds_every_slot_taken_works_on_idle_time_until_they_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path))
    cpus = len(os.sched_getaffinity(0))
    with slots_held(tmp_path, cpus, cpus) as holder:
        letting_go = threading.Timer(0.5, holder.kill)
        letting_go.start()
        try:
            run = amz.run(busy_at_priority, [0.002] * 1000)  # about 2 s serially
        finally:
            letting_go.cancel()
    policies = [policy for _, policy in run.results]
    assert os.SCHED_IDLE in policies  # while the holder lived
    assert policies[-1] != os.SCHED_IDLE  # once its slots were free
    assert "CPUs freed up" in run.plan.reason and run.plan.n_jobs == cpus, run.plan.reason
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller's thread is itself again


def test_a_map_that_fails_on_idle_time_gives_the_caller_its_priority_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path))
    cpus = len(os.sched_getaffinity(0))
    with slots_held(tmp_path, cpus, cpus), pytest.raises(ValueError, match="item 300 is bad"):
        amz.execute(busy_failing_at, range(600))
    assert os.sched_getscheduler(0) != os.SCHED_IDLE


def _map_inside(seconds: float) -> int:
    """A mapped function that runs a map of its own, long enough to want the node's slots."""
    from tests.workloads import busy

    return len(amz.execute(busy, [seconds] * 300))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["processes", "threads"])
def test_a_map_inside_a_map_never_waits_for_its_outer_map_s_slots(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The outer map holds every slot; the inner maps, in its workers, would wait for ever.
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path))
    cpus = len(os.sched_getaffinity(0))
    outer = amz.Plan.fixed(backend, cpus, 1)
    assert amz.execute(_map_inside, [0.002] * cpus, plan=outer) == [300] * cpus


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_quick_map_takes_no_slot_but_plans_within_those_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # About 0.3 s of calls: too quick to wait for a slot, and alone worth two workers; beside a
    # map that holds every slot but one, it must not start a second.
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path))
    cpus = len(os.sched_getaffinity(0))
    with slots_held(tmp_path, cpus, cpus - 1):
        run = amz.run(busy, [0.002] * 150)
        free_after = SlotFiles(str(tmp_path), cpus).free()
    assert run.plan.n_jobs == 1, run.plan.reason
    assert "node lease" in run.plan.limits["cpus_source"], run.plan.limits
    assert free_after == 1  # it held none
