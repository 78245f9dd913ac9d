"""What this worker may really use: CPUs and memory, container quotas included.

``os.cpu_count()`` reports the host's cores, not the container's quota: a 2-CPU pod on an 80-core
node that trusts it starts 80 workers and is throttled or OOM-killed. Each limit here is the
smallest of every source that applies, and remembers which source that was, so that a plan can say
why it stopped at the number it chose.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields

import psutil

__all__ = ["WorkerLimits", "detect", "parse_memory", "worker_limits"]

log = logging.getLogger(__name__)

MAX_WORKERS_ENV = "AMORSIZE_MAX_WORKERS"
MEMORY_LIMIT_ENV = "AMORSIZE_MEMORY_LIMIT"
# Where detect() reads the kernel's files; tests point these at fake trees.
PROC_ROOT = "/proc"
CGROUP_ROOT = "/sys/fs/cgroup"

# cgroup v1 writes this (PAGE_COUNTER_MAX rounded to pages) when no memory limit is set.
_CGROUP_V1_UNLIMITED = 1 << 62
# The files read here are a few lines; /proc/self/cgroup is one line per controller.
_MAX_FILE_BYTES = 1 << 16

_MEMORY_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MEMORY_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class WorkerLimits:
    """The CPUs and bytes this process may use, and where each number came from.

    Attributes:
        cpus: whole CPUs available to workers, at least 1.
        cpus_source: the source that set ``cpus`` (for example ``"cgroup v2 cpu.max"``).
        cpu_quota: the CPU quota in CPUs when a cgroup sets one (may be fractional), else None.
        memory_bytes: bytes that may still be allocated before a limit is hit.
        memory_source: the source that set ``memory_bytes``.
        daemonic: True inside a daemonic process (Celery workers), where no child process may start.
        upper_bound: True when only the cheap sources were read (``detect(upper_bound=True)``):
            the real limits may be lower.
    """

    cpus: int
    cpus_source: str
    memory_bytes: int
    memory_source: str
    cpu_quota: float | None = None
    daemonic: bool = False
    upper_bound: bool = False

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types, for plans, logs and the CLI."""
        # Every field is a flat, immutable value: asdict's recursive deep copy is not needed, and
        # this runs before every map.
        return {field.name: getattr(self, field.name) for field in fields(self)}


def parse_memory(value: str | int) -> int:
    """Parse a byte count such as ``1073741824``, ``"512M"``, ``"4G"`` or ``"1.5GiB"``.

    Raises:
        ValueError: when the value is not a positive size.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"a memory size must be an int or a string like '4G', got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY_PATTERN.match(value)
        if match is None:
            raise ValueError(
                f"a memory size must be bytes or a number with K, M, G or T (like '512M'), "
                f"got {value!r}"
            )
        size = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()])
    if size <= 0:
        raise ValueError(f"a memory size must be positive, got {value!r}")
    return size


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
    - the ``max_workers`` argument.

    Memory is the smallest of the cgroup limit minus its current usage (v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``), the available memory (``MemAvailable``, or psutil's estimate), a
    Dask worker's ``memory_limit`` minus the worker's memory, ``AMORSIZE_MEMORY_LIMIT`` and the
    ``memory_limit`` argument.

    Args:
        max_workers: a cap on CPUs set by the caller.
        memory_limit: a cap on memory set by the caller, bytes or a string like ``"4G"``.
        upper_bound: True to skip the costly sources, the cgroup files and the memory available
            now (a dozen files, 0.6 ms in a fresh process on a VM), and count the physical memory
            instead: the limits are then an upper bound of the real ones, and say so.
        proc_root: where ``/proc`` is (PROC_ROOT); tests point it at a fake tree.
        cgroup_root: where the cgroup file system is mounted (CGROUP_ROOT); tests point it at a
            fake tree.
        environ: the environment to read; defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    if max_workers is not None:
        _check_positive_int("max_workers", max_workers)
    proc_root = os.fspath(PROC_ROOT if proc_root is None else proc_root)
    cgroup_root = os.fspath(CGROUP_ROOT if cgroup_root is None else cgroup_root)
    # Without this process's cgroup paths no cgroup file is read.
    cgroups = {} if upper_bound else _read_proc_cgroup(proc_root)
    # The v2 hierarchy limits both CPUs and memory: its directories are found once.
    unified = _cgroup_dirs(_v2_mount(cgroup_root), cgroups[""]) if "" in cgroups else []

    # The affinity mask is a subset of the host's CPUs: where it exists, os.cpu_count() adds
    # nothing, and it costs a file read (50 µs on a VM).
    cpu_candidates: list[tuple[float, str]] = (
        [(len(os.sched_getaffinity(0)), "CPU affinity")]
        if hasattr(os, "sched_getaffinity")
        else [(os.cpu_count() or 1, "os.cpu_count")]
    )
    quota = _cpu_quota(cgroups, cgroup_root, unified)
    if quota is not None:
        cpu_candidates.append(quota)
    dask_cpus, dask_memory = _dask_worker_limits()
    if dask_cpus is not None:
        cpu_candidates.append(dask_cpus)
    if env.get(MAX_WORKERS_ENV):
        cpu_candidates.append((_env_positive_int(env, MAX_WORKERS_ENV), MAX_WORKERS_ENV))
    if max_workers is not None:
        cpu_candidates.append((max_workers, "max_workers argument"))
    cpu_limit, cpus_source = min(cpu_candidates, key=lambda candidate: candidate[0])

    memory_candidates = [_physical_memory() if upper_bound else _available_memory(proc_root)]
    cgroup_memory = _cgroup_memory(cgroups, cgroup_root, unified)
    if cgroup_memory is not None:
        memory_candidates.append(cgroup_memory)
    if dask_memory is not None:
        memory_candidates.append(dask_memory)
    if env.get(MEMORY_LIMIT_ENV):
        memory_candidates.append((_env_memory(env, MEMORY_LIMIT_ENV), MEMORY_LIMIT_ENV))
    if memory_limit is not None:
        memory_candidates.append((parse_memory(memory_limit), "memory_limit argument"))
    memory_bytes, memory_source = min(memory_candidates, key=lambda candidate: candidate[0])

    return WorkerLimits(
        cpus=max(1, math.ceil(cpu_limit)),
        cpus_source=cpus_source,
        memory_bytes=max(0, int(memory_bytes)),
        memory_source=memory_source,
        cpu_quota=None if quota is None else quota[0],
        daemonic=bool(multiprocessing.current_process().daemon),
        upper_bound=upper_bound,
    )


def _available_memory(proc_root: str) -> tuple[int, str]:
    """The kernel's estimate of the memory that can be allocated without swapping, read from
    /proc/meminfo's MemAvailable line, and psutil's where there is none (kernels before 3.14,
    other systems). psutil parses every line to get it: 120 µs in a fresh process on a VM,
    against 40 for the one line."""
    text = _read_text(os.path.join(proc_root, "meminfo")) or ""
    start = text.find("MemAvailable:")
    if start >= 0:
        fields = text[start : text.find("\n", start)].split()
        if len(fields) == 3 and fields[1].isdigit() and fields[2] == "kB":
            return int(fields[1]) << 10, "available memory (MemAvailable)"
    return psutil.virtual_memory().available, "available memory (psutil)"


def _physical_memory() -> tuple[int, str]:
    """The machine's memory: more than is ever available, so an upper bound of every limit."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    except (AttributeError, ValueError, OSError):  # not a POSIX system that tells
        return psutil.virtual_memory().total, "physical memory (psutil)"


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")


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
        used = psutil.Process().memory_info().rss
        memory = (int(limit) - used, "Dask worker memory_limit - worker memory")
    return cpus, memory


# --- cgroups ---------------------------------------------------------------------------------
# Plain string paths and open(): detection runs before every map, and pathlib's objects cost
# several times the read itself (0.8 ms against 0.25 ms for the dozen files of a v1 host).


def _read_proc_cgroup(proc_root: str) -> dict[str, str]:
    """Map each cgroup controller (``""`` for the v2 unified hierarchy) to this process's path."""
    text = _read_text(os.path.join(proc_root, "self", "cgroup"))
    paths: dict[str, str] = {}
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _cgroup_dirs(mount: str, path: str) -> list[str]:
    """This process's cgroup directory under ``mount`` and each parent up to the mount.

    Inside a cgroup namespace the path in /proc/self/cgroup may not exist under the mount (the
    mount already is the container's cgroup); the mount itself is then the only directory.
    """
    mount = os.path.normpath(mount)
    leaf = os.path.normpath(os.path.join(mount, path.lstrip("/")))
    if not os.path.isdir(leaf):
        return [mount] if os.path.isdir(mount) else []
    dirs = [leaf]
    while dirs[-1] != mount and dirs[-1].startswith(mount + os.sep):
        dirs.append(os.path.dirname(dirs[-1]))
    return dirs


def _v1_mount(cgroup_root: str, controller: str) -> str | None:
    """Where a v1 controller is mounted; cpu is usually co-mounted with cpuacct."""
    names = ("cpu,cpuacct", "cpuacct,cpu", "cpu") if controller == "cpu" else (controller,)
    for name in names:
        if os.path.isdir(os.path.join(cgroup_root, name)):
            return os.path.join(cgroup_root, name)
    return None


def _v2_mount(cgroup_root: str) -> str:
    """The unified hierarchy: the root on v2-only hosts, ``unified/`` on hybrid v1/v2 hosts."""
    hybrid = os.path.join(cgroup_root, "unified")
    if not os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")) and os.path.isdir(
        hybrid
    ):
        return hybrid
    return cgroup_root


def _read_text(path: str) -> str | None:
    # One os.open and one os.read: no file object, no buffer, no codec. A map reads about ten of
    # these files before it starts, a system call costs microseconds on a VM, and the kernel hands
    # out a proc or cgroup file of a few lines whole, in the first read.
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(descriptor, _MAX_FILE_BYTES).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(descriptor)


def _read_fields(path: str) -> list[str] | None:
    text = _read_text(path)
    return None if text is None else text.split()


def _cpu_quota(
    cgroups: Mapping[str, str], cgroup_root: str, unified: list[str]
) -> tuple[float, str] | None:
    """The tightest CPU quota along this process's cgroup path (``unified``: its v2 directories,
    leaf first), in CPUs, with its source."""
    quotas: list[tuple[float, str]] = []
    for directory in unified:
        fields = _read_fields(os.path.join(directory, "cpu.max"))
        if fields and len(fields) == 2 and fields[0] != "max" and int(fields[1]) > 0:
            quotas.append((int(fields[0]) / int(fields[1]), "cgroup v2 cpu.max"))
    if "cpu" in cgroups:
        mount = _v1_mount(cgroup_root, "cpu")
        for directory in _cgroup_dirs(mount, cgroups["cpu"]) if mount else []:
            quota = _read_fields(os.path.join(directory, "cpu.cfs_quota_us"))
            if not quota or int(quota[0]) <= 0:
                continue  # -1: no quota here, and no period worth reading
            period = _read_fields(os.path.join(directory, "cpu.cfs_period_us"))
            if period and int(period[0]) > 0:
                quotas.append((int(quota[0]) / int(period[0]), "cgroup v1 cpu.cfs_quota_us"))
    return min(quotas, key=lambda quota: quota[0]) if quotas else None


def _cgroup_memory(
    cgroups: Mapping[str, str], cgroup_root: str, unified: list[str]
) -> tuple[int, str] | None:
    """The least memory left under any limit along this process's cgroup path (``unified``: its
    v2 directories, leaf first)."""
    room: list[tuple[int, str]] = []
    for directory in unified:
        limit = _read_fields(os.path.join(directory, "memory.max"))
        if limit and limit[0] != "max":
            usage = _read_fields(os.path.join(directory, "memory.current"))
            used = int(usage[0]) if usage else 0
            room.append((int(limit[0]) - used, "cgroup v2 memory.max - memory.current"))
    if "memory" in cgroups:
        mount = _v1_mount(cgroup_root, "memory")
        for directory in _cgroup_dirs(mount, cgroups["memory"]) if mount else []:
            limit = _read_fields(os.path.join(directory, "memory.limit_in_bytes"))
            if limit and int(limit[0]) < _CGROUP_V1_UNLIMITED:
                usage = _read_fields(os.path.join(directory, "memory.usage_in_bytes"))
                used = int(usage[0]) if usage else 0
                room.append(
                    (int(limit[0]) - used, "cgroup v1 memory.limit_in_bytes - usage_in_bytes")
                )
    return min(room, key=lambda entry: entry[0]) if room else None
