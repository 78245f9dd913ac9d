"""What this worker may really use: CPUs and memory, container quotas included.

``os.cpu_count()`` reports the host's cores, not the container's quota: a 2-CPU pod on an 80-core
node that trusts it starts 80 workers and is throttled or OOM-killed. Each limit here is the
smallest of every source that applies, and remembers which source that was, so that a plan can say
why it stopped at the number it chose.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

from ..data.checks import check_positive_int, parse_memory
from ..probes.cgroups import Cgroups
from ..probes.processes import in_pool_worker, is_daemonic
from ..probes.procfs import read_text, resident_bytes, usable_cpus
from .budget import declared_cpus

__all__ = [
    "MAX_WORKERS_ENV",
    "MEMORY_LIMIT_ENV",
    "OTHER_WORK_MIN_SECONDS",
    "WorkerLimits",
    "detect",
    "less_other_work",
    "worker_limits",
]

log = logging.getLogger(__name__)

MAX_WORKERS_ENV = "AMORSIZE_MAX_WORKERS"
MEMORY_LIMIT_ENV = "AMORSIZE_MEMORY_LIMIT"
# CPUs other processes keep busy are read over a stretch at least this long (clock ticks are
# 10 ms), and count once they make up this much of a CPU. (docs/decisions.md#cpus-busy-with-other-work)
OTHER_WORK_MIN_SECONDS = 0.05
OTHER_WORK_MIN_CPUS = 0.5
# Where detect() reads the kernel's files; tests point these at fake trees.
PROC_ROOT = "/proc"
CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class WorkerLimits:
    """The CPUs and bytes this process may use, and where each number came from.

    Attributes:
        cpus: whole CPUs available to workers, at least 1.
        cpus_source: the source that set ``cpus`` (for example ``"cgroup v2 cpu.max"``).
        cpu_quota: the CPU quota in CPUs when a cgroup sets one (may be fractional), else None.
        memory_bytes: bytes that may still be allocated before a limit is hit.
        memory_source: the source that set ``memory_bytes``.
        daemonic: True inside a daemonic process (Celery and Dask workers), where
            ``multiprocessing`` refuses to start children; the runner starts its workers anyway.
        in_pool_worker: True inside a worker process of another map's pool, where no process
            pool can start (loky's nesting limit).
        upper_bound: True when only the cheap sources were read (``detect(upper_bound=True)``):
            the real limits may be lower.
    """

    cpus: int
    cpus_source: str
    memory_bytes: int
    memory_source: str
    cpu_quota: float | None = None
    daemonic: bool = False
    in_pool_worker: bool = False
    upper_bound: bool = False

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types, for plans, logs and the CLI."""
        # Every field is a flat, immutable value: asdict's recursive deep copy is not needed, and
        # this runs before every map.
        return {field.name: getattr(self, field.name) for field in fields(self)}


def worker_limits() -> WorkerLimits:
    """The limits of this process, from the real system files and the environment."""
    return detect()


def detect(
    *,
    max_workers: int | None = None,
    memory_limit: int | str | None = None,
    upper_bound: bool = False,
    proc_root: str | os.PathLike[str] | None = None,
    cgroup_root: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> WorkerLimits:
    """Detect the CPUs and memory this process may use.

    CPUs are the smallest of:

    - the CPU affinity mask (``taskset``, Kubernetes static CPU manager), or where there is none
      ``os.cpu_count()``, the host's logical CPUs;
    - the cgroup v2 ``cpu.max`` quota, or the cgroup v1 CFS quota, of this process's cgroup (found
      through ``/proc/self/cgroup``) and of every parent cgroup, rounded up;
    - inside a task of a Dask worker (Prefect's DaskTaskRunner, dask.distributed), the worker's
      threads: the share of the node the cluster gave it;
    - the ``AMORSIZE_MAX_WORKERS`` environment variable;
    - the ``max_workers`` argument;
    - a budget the orchestrator declared for this task (``budget.cpu_budget``: Airflow's
      ``pool_slots``), named first where it ties with another source.

    Memory is the smallest of the cgroup limit minus its current usage (v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``), the available memory (``MemAvailable``, or psutil's estimate), a
    Dask worker's ``memory_limit`` minus the worker's memory, ``AMORSIZE_MEMORY_LIMIT`` and the
    ``memory_limit`` argument.

    Args:
        max_workers: a cap on CPUs set by the caller.
        memory_limit: a cap on memory set by the caller, bytes or a string like ``"4G"``.
        upper_bound: True to skip the costly sources, the cgroup files and the memory available
            now, and count the physical memory instead: the limits are then an upper bound of
            the real ones, and say so (docs/decisions.md#limits-read-as-an-upper-bound).
        proc_root: where ``/proc`` is (PROC_ROOT); tests point it at a fake tree.
        cgroup_root: where the cgroup file system is mounted (CGROUP_ROOT); tests point it at a
            fake tree.
        environ: the environment to read; defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if max_workers is not None:
        check_positive_int("max_workers", max_workers)
    proc_root = os.fspath(PROC_ROOT if proc_root is None else proc_root)
    cgroup_root = os.fspath(CGROUP_ROOT if cgroup_root is None else cgroup_root)
    # Without this process's cgroup paths no cgroup file is read.
    cgroups = None if upper_bound else Cgroups(proc_root, cgroup_root)
    dask_cpus, dask_memory = _dask_worker_limits()

    # The affinity mask is a subset of the host's CPUs: where it exists, os.cpu_count() adds
    # nothing.
    cpu_source = "CPU affinity" if hasattr(os, "sched_getaffinity") else "os.cpu_count"
    quota = cgroups.cpu_quota() if cgroups else None
    cpu_limit, cpus_source = _smallest(
        declared_cpus(),  # first: where it ties, the task's own declaration says more
        (usable_cpus(), cpu_source),
        quota,
        dask_cpus,
        _from_env(env, MAX_WORKERS_ENV, _env_positive_int),
        None if max_workers is None else (max_workers, "max_workers argument"),
    )
    memory_bytes, memory_source = _smallest(
        _physical_memory() if upper_bound else _available_memory(proc_root),
        cgroups.memory_room() if cgroups else None,
        dask_memory,
        _from_env(env, MEMORY_LIMIT_ENV, _env_memory),
        None if memory_limit is None else (parse_memory(memory_limit), "memory_limit argument"),
    )
    return WorkerLimits(
        cpus=max(1, math.ceil(cpu_limit)),
        cpus_source=cpus_source,
        memory_bytes=max(0, int(memory_bytes)),
        memory_source=memory_source,
        cpu_quota=None if quota is None else quota[0],
        daemonic=is_daemonic(),
        in_pool_worker=in_pool_worker(),
        upper_bound=upper_bound,
    )


def _smallest(*candidates: tuple[float, str] | None) -> tuple[float, str]:
    """The smallest (value, source) among those given; the first wins a tie."""
    return min((c for c in candidates if c is not None), key=lambda candidate: candidate[0])


def _from_env(
    env: Mapping[str, str], name: str, parse: Callable[[Mapping[str, str], str], float]
) -> tuple[float, str] | None:
    return (parse(env, name), name) if env.get(name) else None


def _available_memory(proc_root: str) -> tuple[int, str]:
    """The kernel's estimate of the memory that can be allocated without swapping, read from
    /proc/meminfo's MemAvailable line (a third of what psutil's parse of every line costs), and
    psutil's where there is none (kernels before 3.14, other systems)."""
    text = read_text(os.path.join(proc_root, "meminfo")) or ""
    start = text.find("MemAvailable:")
    if start >= 0:
        fields = text[start : text.find("\n", start)].split()
        if len(fields) == 3 and fields[1].isdigit() and fields[2] == "kB":
            return int(fields[1]) << 10, "available memory (MemAvailable)"
    import psutil  # no MemAvailable: the portable way

    return psutil.virtual_memory().available, "available memory (psutil)"


def _physical_memory() -> tuple[int, str]:
    """The machine's memory: more than is ever available, so an upper bound of every limit."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    except (AttributeError, ValueError, OSError):  # not a POSIX system that tells
        import psutil

        return psutil.virtual_memory().total, "physical memory (psutil)"


def _env_positive_int(env: Mapping[str, str], name: str) -> int:
    raw = env[name]
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {raw!r}; unset it or fix it")
    return value


def _env_memory(env: Mapping[str, str], name: str) -> int:
    try:
        return parse_memory(env[name])
    except ValueError as error:
        raise ValueError(f"{name} is not a memory size: {error}; unset it or fix it") from None


# --- Dask ---------------------------------------------------------------------------------------


def _dask_worker_limits() -> tuple[tuple[float, str] | None, tuple[int, str] | None]:
    """The CPUs and memory of the Dask worker running this task, or None for each.

    Only when ``distributed`` is already imported: a process that never used Dask pays nothing.
    """
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None, None
    try:
        worker = distributed.get_worker()
    except (ValueError, AttributeError):  # not inside a worker's task
        return None, None
    try:
        cpus: tuple[float, str] | None = (worker.state.nthreads, "Dask worker nthreads")
        limit = worker.memory_manager.memory_limit
    except AttributeError:  # a distributed release that moved these: use the other sources
        log.debug("amorsize: this distributed release hides the worker's limits", exc_info=True)
        return None, None
    memory: tuple[int, str] | None = None
    if limit:
        used = resident_bytes()
        memory = (int(limit) - used, "Dask worker memory_limit - worker memory")
    return cpus, memory


def less_other_work(limits: WorkerLimits, busy_cpus: float | None) -> WorkerLimits:
    """``limits`` less the CPUs other processes kept busy (``busy_cpus``, of the whole node),
    saying so; unchanged where that is under OTHER_WORK_MIN_CPUS or unknown, or where a quota
    sets the CPUs (the node's other work then says nothing of what the quota leaves)."""
    if busy_cpus is None or busy_cpus < OTHER_WORK_MIN_CPUS or limits.cpu_quota is not None:
        return limits
    node = os.cpu_count() or limits.cpus
    if limits.cpus < node:  # an affinity or a cap of its own: others' CPUs may not be ours
        return limits
    spare = max(1, round(node - busy_cpus))
    if spare >= limits.cpus:
        return limits
    source = f"{limits.cpus_source}, less {busy_cpus:.1f} kept busy by other processes"
    return replace(limits, cpus=spare, cpus_source=source)
