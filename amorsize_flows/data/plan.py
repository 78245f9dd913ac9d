"""Plans and run records: frozen, plain-JSON data that can be stored, shown and trusted.

A :class:`Plan` says how to run a map (serial, threads or processes; workers; chunk size) and why.
A :class:`RunRecord` says what running it really cost, so that the next scheduled run starts from
evidence instead of sampling again.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from . import schema
from .checks import check_backend, check_positive_int
from .errors import InvalidPlanError
from .json_files import write_json

__all__ = ["Candidate", "Plan", "RunRecord", "load_config", "save_config"]

Backend = Literal["serial", "threads", "processes"]
StartMethod = Literal["fork", "loky"]


def _now() -> str:
    """Now in UTC, as ``datetime.isoformat`` writes it to the second (without its import)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def _check_settings(backend: object, n_jobs: object, chunksize: object) -> None:
    check_backend(backend)
    check_positive_int("n_jobs", n_jobs)
    check_positive_int("chunksize", chunksize)
    if backend == "serial" and n_jobs != 1:
        raise ValueError(f"a serial plan runs one job: `n_jobs` must be 1, got {n_jobs!r}")


@dataclass(frozen=True)
class Candidate:
    """One configuration the model weighed, with the seconds it predicted for it."""

    backend: Backend
    n_jobs: int
    chunksize: int
    predicted_seconds: float
    start_method: StartMethod | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """How to run one parallel map, and why.

    Attributes:
        backend: ``"serial"``, ``"threads"`` or ``"processes"``.
        n_jobs: workers (threads or processes); 1 for serial.
        chunksize: items handed to a worker at a time.
        estimated_speedup: predicted serial seconds / predicted seconds of this plan, for the
            whole call: the dry run, start-up, dispatch and serialization included.
        reason: one sentence a person understands.
        start_method: ``"fork"`` (inherits the caller's warm state; only from a single-threaded
            process) or ``"loky"`` (a fresh interpreter that does not re-import ``__main__``).
        predicted_seconds: predicted wall seconds of the whole call.
        serial_seconds: predicted wall seconds of a plain loop over every item.
        n_items: items in the map, or None when an iterator's length was not known.
        function: ``module:qualname`` of the mapped function.
        function_digest: a hash of its code, to recognise it in the next run.
        source: ``"sampled"`` (a dry run), ``"history"`` (a previous run's record),
            ``"stored"`` (a plan given back) or ``"fixed"`` (settings chosen by hand).
        limits: the worker limits the plan was made under.
        profile: the measured costs of the function the plan was made from.
        candidates: every configuration weighed, cheapest first.
        unmodelled_process_seconds: seconds this stage's last process map took beyond the model's
            prediction (a large caller's forks, other work), counted in every process candidate.
    """

    backend: Backend
    n_jobs: int
    chunksize: int
    estimated_speedup: float = 1.0
    reason: str = "Chosen by the caller; not estimated."
    start_method: StartMethod | None = None
    predicted_seconds: float = 0.0
    serial_seconds: float = 0.0
    n_items: int | None = None
    function: str = ""
    function_digest: str = ""
    source: str = "fixed"
    limits: Mapping[str, Any] = field(default_factory=dict)
    profile: Mapping[str, Any] = field(default_factory=dict)
    candidates: tuple[Candidate, ...] = ()
    unmodelled_process_seconds: float = 0.0
    created_at: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        _check_settings(self.backend, self.n_jobs, self.chunksize)
        if self.start_method is not None and self.backend != "processes":
            raise ValueError(f"`start_method` applies to processes only, got {self.start_method!r}")

    @classmethod
    def fixed(cls, backend: Backend, n_jobs: int = 1, chunksize: int = 1, **extra: Any) -> Plan:
        """A plan with settings chosen by hand; nothing is measured or estimated."""
        return cls(backend=backend, n_jobs=n_jobs, chunksize=chunksize, source="fixed", **extra)

    def with_changes(self, **changes: Any) -> Plan:
        """A copy with some fields changed (plans are frozen)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types with a schema version, for XCom, artifacts and files."""
        data = _stored(self, ("estimated_speedup",))
        data["candidates"] = [candidate.to_dict() for candidate in self.candidates]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Rebuild a plan from :meth:`to_dict` output, validating every field.

        Raises:
            InvalidPlanError: when ``data`` is not a plan of this schema version.
        """
        checked = _checked(data, schema.PLAN_SCHEMA, "plan")
        checked["candidates"] = tuple(Candidate(**c) for c in checked.get("candidates", ()))
        try:
            return cls(**checked)
        except ValueError as error:
            raise InvalidPlanError(f"a stored plan is inconsistent: {error}") from None

    def summary(self) -> str:
        """One line: what runs how, and the estimated speedup."""
        workers = "" if self.backend == "serial" else f" x{self.n_jobs}"
        return (
            f"{self.backend}{workers}, chunksize {self.chunksize}, "
            f"estimated speedup {self.estimated_speedup:.2f}x"
        )


@dataclass(frozen=True)
class RunRecord:
    """What a map really cost: the evidence the next run of the same stage starts from.

    Attributes:
        wall_seconds: the whole call, dry run included.
        map_seconds: the part after the dry run.
        startup_seconds: from the start of the map to the first result, less its compute.
        seconds_per_item: mean seconds of one call of the function, measured where it ran.
        serial_seconds_estimate: what a plain loop would have taken, from the measured costs.
        achieved_speedup: ``serial_seconds_estimate / wall_seconds``.
        peak_memory_bytes: the most memory a chunk took in a worker process beyond what the
            worker held before it (0 where no worker process ran, or none could be read).
        profile: the function's costs corrected by this run's measurements.
        unmodelled_process_seconds: what this stage's process maps take beyond the model: this
            run's excess over its prediction where it used processes, else its plan's figure.
    """

    function: str
    function_digest: str
    n_items: int
    backend: Backend
    n_jobs: int
    chunksize: int
    wall_seconds: float
    seconds_per_item: float
    achieved_speedup: float
    start_method: StartMethod | None = None
    source: str = "fixed"
    sample_seconds: float = 0.0
    map_seconds: float = 0.0
    startup_seconds: float = 0.0
    sampled_items: int = 0
    cpu_seconds_per_item: float = 0.0
    serial_seconds_estimate: float = 0.0
    estimated_speedup: float = 1.0
    peak_memory_bytes: int = 0
    unmodelled_process_seconds: float = 0.0
    limits: Mapping[str, Any] = field(default_factory=dict)
    profile: Mapping[str, Any] = field(default_factory=dict)
    finished_at: str = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types with a schema version."""
        return _stored(self, ("achieved_speedup", "estimated_speedup"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """Rebuild a record from :meth:`to_dict` output, validating every field.

        Raises:
            InvalidPlanError: when ``data`` is not a record of this schema version.
        """
        checked = _checked(data, schema.RECORD_SCHEMA, "run record")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in checked.items() if key in known})


def _stored(entry: Plan | RunRecord, speedups: tuple[str, ...]) -> dict[str, Any]:
    """``entry`` in plain JSON types, with the schema version."""
    data = asdict(entry)
    data["limits"] = dict(entry.limits)
    data["profile"] = dict(entry.profile)
    for name in speedups:
        data[name] = _finite(data[name])
    return {"schema_version": schema.SCHEMA_VERSION, **data}


def _checked(data: object, against: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data`` validated against the schema ``against``, without its schema version."""
    checked = dict(
        schema.validate(dict(data) if isinstance(data, Mapping) else data, against, what)
    )
    checked.pop("schema_version")
    return checked


def _finite(value: float) -> float:
    """JSON has no infinity or NaN; a speedup that is not finite is stored as 0 (unknown)."""
    return float(value) if math.isfinite(value) else 0.0


def save_config(plan: Plan, path: str | os.PathLike[str]) -> Path:
    """Write ``plan`` as JSON to ``path`` (parents created) and return the path."""
    if not isinstance(plan, Plan):
        raise TypeError(f"`plan` must be an amorsize_flows.Plan, got {type(plan).__name__}")
    return write_json(path, plan.to_dict(), indent=2)


def load_config(path: str | os.PathLike[str]) -> Plan:
    """Read a plan written by :func:`save_config`.

    Raises:
        FileNotFoundError: when there is no file at ``path``.
        InvalidPlanError: when the file is not JSON or not a valid plan.
    """
    raw = Path(path).read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidPlanError(f"{os.fspath(path)} is not JSON ({error}); save it again") from None
    plan = Plan.from_dict(data)
    return plan.with_changes(source="stored")
