"""Real cgroups: a child process moved into a child of this process's own cgroup, with a CPU quota
or a memory limit, plans within it. Skipped, saying why, where cgroup v1 is not writable here;
the faked trees of test_limits.py cover the other layouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
GIB = 1 << 30


def _own_cgroup(controller: str) -> Path | None:
    """This process's cgroup directory of a v1 ``controller``, or None."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            directory = CGROUP_ROOT / controller / path.lstrip("/")
            return directory if directory.is_dir() else None
    return None


@pytest.fixture
def child_cgroup(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A new child of this process's own cgroup of ``request.param`` (a v1 controller), removed
    after the test."""
    controller = request.param
    parent = _own_cgroup(controller) if Path("/proc/self/cgroup").exists() else None
    if parent is None:
        pytest.skip(f"no cgroup v1 {controller} controller for this process")
    child = parent / f"amorsize-test-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
    except OSError as error:
        pytest.skip(f"cannot create a {controller} cgroup under {parent} ({error})")
    try:
        yield child
    finally:
        # Its processes have exited by now; a cgroup with none left can be removed.
        child.rmdir()


def _run_inside(cgroup: Path, code: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that moved itself into ``cgroup`` before starting."""

    def join() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        preexec_fn=join,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
    )


@pytest.mark.parametrize("child_cgroup", ["cpu"], indirect=True)
def test_half_a_cpu_quota_plans_one_worker(child_cgroup: Path) -> None:
    (child_cgroup / "cpu.cfs_period_us").write_text("100000")
    (child_cgroup / "cpu.cfs_quota_us").write_text("50000")
    done = _run_inside(
        child_cgroup,
        """
        import json
        import amorsize_flows as amz
        from tests.workloads import busy
        limits = amz.worker_limits()
        plan = amz.optimize(busy, [0.002] * 300)
        print(json.dumps({"limits": limits.to_dict(), "n_jobs": plan.n_jobs,
                          "backend": plan.backend, "reason": plan.reason}))
        """,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["limits"]["cpus"] == 1, seen
    assert seen["limits"]["cpus_source"] == "cgroup v1 cpu.cfs_quota_us", seen
    assert seen["limits"]["cpu_quota"] == pytest.approx(0.5), seen
    assert seen["n_jobs"] == 1, seen


@pytest.mark.parametrize("child_cgroup", ["memory"], indirect=True)
def test_calls_that_peak_at_1_5_gb_run_one_at_a_time_in_2_gib(child_cgroup: Path) -> None:
    # Each call writes 1.5 GB and frees it: it keeps nothing, but two side by side need 3 GB.
    (child_cgroup / "memory.limit_in_bytes").write_text(str(2 * GIB))
    done = _run_inside(
        child_cgroup,
        """
        import json
        import amorsize_flows as amz

        def peak(index):
            block = bytearray(1536 << 20)
            block[:: 4096] = b"x" * (len(block) // 4096)  # calloc'd pages count once written
            return index

        run = amz.run(peak, range(12))
        print(json.dumps({"results": run.results, "n_jobs": run.plan.n_jobs,
                          "backend": run.plan.backend, "reason": run.plan.reason,
                          "item_memory": run.plan.profile["item_memory_bytes"],
                          "limits": run.plan.limits}))
        """,
    )
    oom_kills = _oom_kills(child_cgroup)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:], oom_kills)
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["results"] == list(range(12))
    assert seen["n_jobs"] == 1, seen
    assert seen["item_memory"] >= 1.4 * GIB, seen
    assert oom_kills == 0


def _oom_kills(cgroup: Path) -> int:
    """How many times the kernel's OOM killer acted in ``cgroup`` (v1 ``memory.oom_control``)."""
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    return 0
