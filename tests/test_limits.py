"""Worker limits from faked cgroup trees (v1, v2, hybrid), real CPU affinity and the environment."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from amorsize_flows.data.checks import parse_memory
from amorsize_flows.measure.budget import cpu_budget
from amorsize_flows.measure.limits import WorkerLimits, detect, worker_limits

GIB = 1 << 30


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake_proc(tmp_path: Path):
    def make(cgroup_lines: str) -> Path:
        _write(tmp_path / "proc" / "self" / "cgroup", cgroup_lines)
        return tmp_path / "proc"

    return make


def test_v2_quota_of_a_parent_cgroup_caps_cpus(tmp_path: Path, fake_proc) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory")
    _write(root / "kubepods" / "cpu.max", "150000 100000")  # 1.5 CPUs on the pod
    _write(root / "kubepods" / "task" / "cpu.max", "max 100000")  # no limit on the leaf
    proc = fake_proc("0::/kubepods/task\n")

    limits = detect(proc_root=proc, cgroup_root=root, environ={})

    assert limits.cpus == 2  # 1.5 CPUs rounds up: two workers each get 0.75 of a CPU
    assert limits.cpu_quota == pytest.approx(1.5)
    assert limits.cpus_source == "cgroup v2 cpu.max"


def test_v2_memory_is_limit_minus_usage(tmp_path: Path, fake_proc) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory")
    _write(root / "pod" / "memory.max", str(2 * GIB))
    _write(root / "pod" / "memory.current", str(GIB // 2))
    proc = fake_proc("0::/pod\n")

    limits = detect(proc_root=proc, cgroup_root=root, environ={})

    assert limits.memory_bytes == 2 * GIB - GIB // 2
    assert limits.memory_source.startswith("cgroup v2")


def test_v2_path_missing_in_namespace_uses_mount_root(tmp_path: Path, fake_proc) -> None:
    # Inside a cgroup namespace /proc/self/cgroup names a path the container cannot see.
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu")
    _write(root / "cpu.max", "100000 100000")
    proc = fake_proc("0::/system.slice/docker-abc.scope\n")

    assert detect(proc_root=proc, cgroup_root=root, environ={}).cpus == 1


def test_v1_cfs_quota_and_memory(tmp_path: Path, fake_proc) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "100000")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    _write(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", str(GIB))
    _write(root / "memory" / "docker" / "abc" / "memory.usage_in_bytes", str(GIB // 4))
    proc = fake_proc("5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n")

    limits = detect(proc_root=proc, cgroup_root=root, environ={})

    assert (limits.cpus, limits.cpus_source) == (1, "cgroup v1 cpu.cfs_quota_us")
    assert limits.memory_bytes == GIB - GIB // 4


def test_v1_unlimited_values_are_ignored(tmp_path: Path, fake_proc) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000")
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712")
    proc = fake_proc("2:cpu:/\n4:memory:/\n")

    limits = detect(proc_root=proc, cgroup_root=root, environ={})

    assert limits.cpu_quota is None
    assert limits.memory_source == "available memory (psutil)"


def test_hybrid_host_reads_v2_under_unified(tmp_path: Path, fake_proc) -> None:
    root = tmp_path / "cgroup"
    _write(root / "unified" / "job" / "cpu.max", "50000 100000")
    (root / "memory").mkdir(parents=True)
    proc = fake_proc("4:memory:/\n0::/job\n")

    limits = detect(proc_root=proc, cgroup_root=root, environ={})

    assert limits.cpus == 1 and limits.cpu_quota == pytest.approx(0.5)


def test_limits_read_from_the_cheap_sources_only_are_an_upper_bound_and_say_so(
    tmp_path: Path, fake_proc
) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory")
    _write(root / "pod" / "cpu.max", "100000 100000")
    _write(root / "pod" / "memory.max", str(GIB))
    _write(root / "pod" / "memory.current", "0")
    proc = fake_proc("0::/pod\n")

    bound = detect(upper_bound=True, proc_root=proc, cgroup_root=root, environ={})
    real = detect(proc_root=proc, cgroup_root=root, environ={})

    assert bound.upper_bound and not real.upper_bound
    assert (real.cpus, real.memory_bytes) == (1, GIB)
    assert bound.cpus == len(os.sched_getaffinity(0)) and bound.cpu_quota is None
    # Nor is the memory free now read: the machine's memory bounds it.
    assert bound.memory_source == "physical memory"
    assert bound.memory_bytes == psutil.virtual_memory().total


def test_available_memory_is_the_kernel_s_estimate_or_psutil_s(tmp_path: Path, fake_proc) -> None:
    proc = fake_proc("0::/\n")
    _write(proc / "meminfo", "MemTotal:       8388608 kB\nMemAvailable:   1048576 kB\n")
    limits = detect(proc_root=proc, cgroup_root=tmp_path, environ={})
    assert (limits.memory_bytes, limits.memory_source) == (GIB, "available memory (MemAvailable)")

    _write(proc / "meminfo", "MemTotal:       8388608 kB\nMemFree:        1048576 kB\n")
    limits = detect(proc_root=proc, cgroup_root=tmp_path, environ={})
    assert limits.memory_source == "available memory (psutil)"
    assert limits.memory_bytes == pytest.approx(psutil.virtual_memory().available, rel=0.1)


def test_no_proc_at_all_still_gives_limits(tmp_path: Path) -> None:
    limits = detect(proc_root=tmp_path / "none", cgroup_root=tmp_path / "none", environ={})
    assert limits.cpus >= 1 and limits.memory_bytes > 0


def test_environment_and_arguments_cap_limits(tmp_path: Path) -> None:
    env = {"AMORSIZE_MAX_WORKERS": "1", "AMORSIZE_MEMORY_LIMIT": "512M"}
    limits = detect(proc_root=tmp_path, cgroup_root=tmp_path, environ=env)
    assert (limits.cpus, limits.cpus_source) == (1, "AMORSIZE_MAX_WORKERS")
    assert (limits.memory_bytes, limits.memory_source) == (512 << 20, "AMORSIZE_MEMORY_LIMIT")

    limits = detect(
        max_workers=1, memory_limit="1K", proc_root=tmp_path, cgroup_root=tmp_path, environ={}
    )
    assert (limits.cpus_source, limits.memory_bytes) == ("max_workers argument", 1024)


def test_a_declared_budget_caps_cpus_and_names_itself_in_a_tie(tmp_path: Path) -> None:
    def limits() -> WorkerLimits:
        return detect(proc_root=tmp_path, cgroup_root=tmp_path, environ={})

    cpus = limits().cpus
    with cpu_budget(1, "pool 'gpu-box'"):
        assert (limits().cpus, limits().cpus_source) == (1, "pool 'gpu-box'")
    with cpu_budget(cpus, "pool 'cpu'"):
        assert (limits().cpus, limits().cpus_source) == (cpus, "pool 'cpu'")
    with cpu_budget(cpus + 1, "pool 'cpu'"):
        assert (limits().cpus, limits().cpus_source) == (cpus, "CPU affinity")
    assert limits().cpus_source == "CPU affinity"  # the budget ends with its context
    with pytest.raises(ValueError, match="`cpus` must be an int >= 1, got 0"), cpu_budget(0, "x"):
        pass


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AMORSIZE_MAX_WORKERS": "many"}, "AMORSIZE_MAX_WORKERS must be a whole number"),
        ({"AMORSIZE_MAX_WORKERS": "0"}, "AMORSIZE_MAX_WORKERS must be a whole number"),
        ({"AMORSIZE_MEMORY_LIMIT": "lots"}, "AMORSIZE_MEMORY_LIMIT is not a memory size"),
    ],
)
def test_bad_environment_says_which_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        detect(proc_root=tmp_path, cgroup_root=tmp_path, environ=env)


def test_bad_max_workers_argument() -> None:
    with pytest.raises(ValueError, match="`max_workers` must be an int >= 1, got 0"):
        detect(max_workers=0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_real_cpu_affinity_pins_cpus() -> None:
    original = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(original)})
        limits = worker_limits()
        assert limits.cpus == 1
        assert limits.cpus_source == "CPU affinity"
    finally:
        os.sched_setaffinity(0, original)
    assert worker_limits().cpus <= len(original)


def _report_daemonic(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(worker_limits().daemonic)


def test_daemonic_process_is_detected() -> None:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_report_daemonic, args=(queue,), daemon=True)
    child.start()
    assert queue.get(timeout=30) is True
    child.join()
    assert worker_limits().daemonic is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 << 20), ("4G", 4 << 30), ("1.5GiB", int(1.5 * GIB)), ("2048", 2048), (100, 100)],
)
def test_parse_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["", "4 apples", "-1", 0, 1.5, True])
def test_parse_memory_rejects_nonsense(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="memory size"):
        parse_memory(bad)  # type: ignore[arg-type]


def test_memory_never_exceeds_what_is_available() -> None:
    assert worker_limits().memory_bytes <= psutil.virtual_memory().available * 1.05


def test_a_dask_workers_threads_and_memory_limit_apply_inside_its_tasks() -> None:
    # A real in-process cluster: the task runs on one of the worker's threads, where the worker,
    # not the node, says how many CPUs and how much memory this task's map may use. In its own
    # interpreter: distributed leaves an offload thread running for the rest of the process.
    pytest.importorskip("distributed")
    code = """
        import json
        import distributed
        from amorsize_flows.measure.limits import worker_limits

        with (
            distributed.LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                processes=False,
                memory_limit="1GiB",
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            inside = client.submit(worker_limits, pure=False).result(timeout=60)
        outside = worker_limits()  # distributed imported, but this is no worker's task
        print(json.dumps([inside.to_dict(), outside.to_dict()]))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    inside, outside = json.loads(done.stdout.splitlines()[-1])
    assert (inside["cpus"], inside["cpus_source"]) == (1, "Dask worker nthreads")
    assert inside["memory_source"] == "Dask worker memory_limit - worker memory"
    assert 0 < inside["memory_bytes"] < 1 << 30
    assert "Dask" not in outside["cpus_source"] and "Dask" not in outside["memory_source"]
