"""The CPU quota and memory limit of this process's cgroup and its parents, v1 and v2.

Plain string paths and ``os`` calls: this runs before every parallel map, and pathlib's objects
cost several times the reads themselves.
"""

from __future__ import annotations

import os

from .procfs import read_text

__all__ = ["Cgroups"]

# cgroup v1 writes this (PAGE_COUNTER_MAX rounded to pages) when no memory limit is set.
CGROUP_V1_UNLIMITED = 1 << 62

Limit = tuple[float, str]  # (value, the file it came from)


class Cgroups:
    """This process's cgroups under ``cgroup_root``, found through ``proc_root``'s
    ``self/cgroup``: each controller's path (``""`` for the v2 unified hierarchy)."""

    def __init__(self, proc_root: str, cgroup_root: str) -> None:
        self.root = cgroup_root
        self.paths = _read_proc_cgroup(proc_root)
        # The v2 hierarchy limits both CPUs and memory: its directories are found once.
        self.unified = _dirs(_v2_mount(cgroup_root), self.paths[""]) if "" in self.paths else []

    def cpu_quota(self) -> Limit | None:
        """The tightest CPU quota along the path, in CPUs (may be fractional)."""
        quotas: list[Limit] = []
        for directory in self.unified:
            fields = _read_fields(os.path.join(directory, "cpu.max"))
            if fields and len(fields) == 2 and fields[0] != "max" and int(fields[1]) > 0:
                quotas.append((int(fields[0]) / int(fields[1]), "cgroup v2 cpu.max"))
        for directory in self._v1_dirs("cpu"):
            quota = _read_fields(os.path.join(directory, "cpu.cfs_quota_us"))
            if not quota or int(quota[0]) <= 0:
                continue  # -1: no quota here, and no period worth reading
            period = _read_fields(os.path.join(directory, "cpu.cfs_period_us"))
            if period and int(period[0]) > 0:
                quotas.append((int(quota[0]) / int(period[0]), "cgroup v1 cpu.cfs_quota_us"))
        return min(quotas, key=lambda quota: quota[0]) if quotas else None

    def memory_room(self) -> Limit | None:
        """The least memory left under any limit along the path: limit minus usage."""
        room: list[Limit] = []
        for directory in self.unified:
            entry = _room(directory, "memory.max", "memory.current", None)
            if entry is not None:
                room.append((entry, "cgroup v2 memory.max - memory.current"))
        for directory in self._v1_dirs("memory"):
            entry = _room(
                directory, "memory.limit_in_bytes", "memory.usage_in_bytes", CGROUP_V1_UNLIMITED
            )
            if entry is not None:
                room.append((entry, "cgroup v1 memory.limit_in_bytes - usage_in_bytes"))
        return min(room, key=lambda entry: entry[0]) if room else None

    def _v1_dirs(self, controller: str) -> list[str]:
        if controller not in self.paths:
            return []
        mount = _v1_mount(self.root, controller)
        return _dirs(mount, self.paths[controller]) if mount else []


def _room(directory: str, limit_file: str, usage_file: str, unlimited: int | None) -> int | None:
    limit = _read_fields(os.path.join(directory, limit_file))
    if not limit or limit[0] == "max" or (unlimited is not None and int(limit[0]) >= unlimited):
        return None
    usage = _read_fields(os.path.join(directory, usage_file))
    return int(limit[0]) - (int(usage[0]) if usage else 0)


def _read_proc_cgroup(proc_root: str) -> dict[str, str]:
    text = read_text(os.path.join(proc_root, "self", "cgroup"))
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


def _dirs(mount: str, path: str) -> list[str]:
    """The cgroup directory under ``mount`` and each parent up to the mount.

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


def _read_fields(path: str) -> list[str] | None:
    text = read_text(path)
    return None if text is None else text.split()
