"""The public entry points: ``optimize``, ``execute``, ``run`` and ``imap``.

They wire the rooms together: the worker's limits, the dry run (or a previous run's evidence),
the model, the runner, and the record of what the run really cost.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field, replace
from typing import Any

from tqdm.auto import tqdm

from . import blas_pools
from .calibrate import get_calibration
from .errors import MapCancelledError
from .limits import WorkerLimits, detect, parse_memory
from .model import MIN_GAIN, Constraints, Situation, choose, duration_text, max_threads
from .plan import BACKENDS, Plan, RunRecord
from .profile import Profile, Sample, function_identity, sample
from .runner import Replanner, RunStats, fork_is_safe, run_plan
from .trend import Batch, RisingBatches
from .worker_start import fresh_load_seconds

__all__ = ["MapIterator", "MapRun", "check_options", "execute", "imap", "optimize", "run"]

log = logging.getLogger(__name__)

Progress = bool | Callable[[int, "int | None"], None]

# A previous run's costs are trusted for items whose pickled size is within this factor of the
# items it measured; beyond it, per-item costs have likely changed too, so the dry run runs again.
HISTORY_SIZE_TOLERANCE = 4.0
# Below this much work left, no pool can save the model's 10% minimum gain: starting and joining
# even two threads costs about 0.4 ms here (calibration), so the machine need not be measured.
TRIVIAL_SECONDS = 1e-3
# A serial plan is weighed again once its calls take this many times longer than the dry run
# measured: the first items were not typical (a skewed input whose rare slow items the dry run
# missed, an input sorted by size). Not less: over 300k cheap calls, batches of 100k ran 2.2
# times slower per call than the dry run's few hundred, the result list outgrowing the caches.
REPLAN_FACTOR = 4.0
# ... and again each time they slow down this many times more (an input sorted by size).
REPLAN_AGAIN = 2.0
# A parallel plan estimated to beat serial by less than this, from fewer steady calls than
# DOUBT_STEADY_CALLS, rests on too little: the first calls in a fresh process can be slow for
# reasons that pass (1 MB results: glibc maps fresh pages, 4.5 ms for the first two calls, 3.0
# after), and one slow steady call read as typical sent 200 such calls to processes, estimated
# 1.15x and achieved 0.85x. The dry run then goes on, within DOUBT_SHARE of the items; little is
# lost since the extra calls' results are kept and the plan in doubt gains little anyway: run
# serially, a tenth of the items costs at most a thirtieth of the map (1 - 1/1.5 of a tenth).
# The share counts the GIL probe's calls: at a twentieth, those 200 calls had none left after
# the probe (10 items: the first, 3 steady, 6 in pairs) and went parallel on 3 steady calls in
# 2 of 6 fresh processes (1.13x and 1.23x estimated); serial in 6 of 6 at a tenth.
DOUBT_SPEEDUP = 1.5
DOUBT_STEADY_CALLS = 8
DOUBT_SHARE = 0.1
# A record of a serial run is one run's timing, and a host's speed varies from run to run: on a
# 2-core VM the retraining flow's featurize_train ran at 1.4 to 2.9 ms a call from one run to the
# next, and planned from a slow one, loky workers were estimated 1.12x and achieved 0.67x. From
# such a record a parallel plan must be estimated this much faster (a record of workers that ran
# is evidence of them, and needs no more than MIN_GAIN).
SWITCH_FROM_SERIAL_SPEEDUP = 1.5
# A batch shorter than this cannot show work worth a pool (none starts that fast), and its clock
# readings are mostly the batch's own bookkeeping.
REPLAN_MIN_SECONDS = 1e-3
# Serial calls planned at least this long are each followed by a clock reading (0.1 µs), so that
# a batch whose calls prove slow is weighed again at once instead of running on (Replanner.alarm).
WATCHED_CALL_SECONDS = 1e-5


@dataclass(frozen=True)
class MapRun:
    """The outcome of :func:`run`: the results in input order, the plan, and what it cost."""

    results: list[Any]
    plan: Plan
    _iterator: MapIterator = field(repr=False, compare=False)

    @property
    def record(self) -> RunRecord:
        """What the run really cost, built on first use (``execute`` never needs it)."""
        record = self._iterator.record
        assert record is not None  # the iterator was exhausted to get the results
        return record


def optimize(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    max_workers: int | None = None,
    memory_limit: int | str | None = None,
    sample_size: int | None = None,
    backend: str | None = None,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    history: RunRecord | Mapping[str, Any] | None = None,
) -> Plan:
    """Measure ``func`` on a few items and return the plan for mapping it over ``items``.

    The dry run calls ``func`` on the first items; their results are discarded here (use
    :func:`execute` or :func:`run` to keep them). An iterator loses the items the dry run read:
    pass a sequence.

    Args:
        func: a function of one item.
        items: the items the map will run over.
        max_workers: at most this many workers, whatever the CPUs.
        memory_limit: plan within this many bytes (an int, or a string like ``"4G"``).
        sample_size: steady-state calls in the dry run; adaptive when None.
        backend: ``"serial"``, ``"threads"`` or ``"processes"`` to fix the backend.
        n_jobs, chunksize: fix the workers or the chunk size; the model chooses the rest.
        history: a previous run's :class:`RunRecord` (or its dict): when it is of the same
            function, the dry run is skipped and the plan starts from its measured costs.
    """
    _check_callable(func)
    prepared = _prepare(func, _check_items(items), _Options.build(locals()))
    return prepared.plan


def execute(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    plan: Plan | None = None,
    n_jobs: int | None = None,
    chunksize: int | None = None,
    backend: str | None = None,
    progress: Progress = False,
    **optimize_options: Any,
) -> list[Any]:
    """Map ``func`` over ``items`` with the best plan, and return the results in input order.

    Without ``plan``, a short dry run measures ``func`` first; its results are kept, never
    computed twice. With ``plan`` (a stored one), nothing is measured.

    Args:
        func: a function of one item.
        items: a sequence or any iterable (a generator is read lazily).
        plan: a plan to follow instead of measuring.
        n_jobs, chunksize, backend: fix these settings; the model chooses the rest.
        progress: True for a progress bar, or a callable ``(done, total)``.
        **optimize_options: ``max_workers``, ``memory_limit``, ``sample_size``, ``history``.

    Raises:
        WorkerDiedError: a worker process died (segfault, OOM kill).
        MapCancelledError: the map was cancelled (SIGTERM).
        Exception: whatever ``func`` raised for an item, with a note naming the item.
    """
    return run(
        func,
        items,
        plan=plan,
        n_jobs=n_jobs,
        chunksize=chunksize,
        backend=backend,
        progress=progress,
        **optimize_options,
    ).results


def run(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    plan: Plan | None = None,
    progress: Progress = False,
    cancel: threading.Event | None = None,
    **options: Any,
) -> MapRun:
    """Like :func:`execute`, and also return the plan and the :class:`RunRecord` of the run.

    This is what the Airflow and Prefect integrations call: the record is the evidence the next
    scheduled run starts from. ``cancel``, when set from another thread or a signal handler,
    stops the map and kills its workers.
    """
    iterator = imap(func, items, plan=plan, progress=progress, cancel=cancel, **options)
    chunks = iterator.chunks()
    results: list[Any] = next(chunks, [])  # the dry run's results: owned, not copied
    for chunk in chunks:
        results.extend(chunk)
    return MapRun(results, iterator.plan, iterator)


def imap(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    plan: Plan | None = None,
    progress: Progress = False,
    cancel: threading.Event | None = None,
    **options: Any,
) -> MapIterator:
    """A lazy iterator of ``func(item)`` in input order, with bounded memory.

    The dry run happens now, so ``.plan`` is known at once; ``.record`` once the iterator is
    exhausted. A serial plan the model chose is weighed again while it runs, if calls turn out
    far costlier than the dry run measured, and ``.plan`` then becomes the plan the rest ran
    with. Closing the iterator early (or leaving a ``for`` loop) stops the workers.
    """
    _check_callable(func)
    checked = _Options.build(options)
    if plan is not None and not isinstance(plan, Plan):
        raise TypeError(f"`plan` must be an amorsize_flows.Plan or None, got {type(plan).__name__}")
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"`progress` must be a bool or a callable (done, total), got {progress!r}")
    if cancel is not None and not isinstance(cancel, threading.Event):
        raise TypeError(f"`cancel` must be a threading.Event or None, got {type(cancel).__name__}")
    started = time.perf_counter()
    prepared = _prepare(func, _check_items(items), checked, plan)
    return MapIterator(func, prepared, started, progress, cancel)


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    max_workers: int | None = None
    memory_limit: int | str | None = None
    sample_size: int | None = None
    backend: str | None = None
    n_jobs: int | None = None
    chunksize: int | None = None
    history: RunRecord | None = None

    @classmethod
    def build(cls, given: Mapping[str, Any]) -> _Options:
        names = set(cls.__dataclass_fields__)
        values = {key: value for key, value in given.items() if key in names}
        unknown = set(given) - names - {"func", "items"}
        if unknown:
            raise TypeError(
                f"unexpected option(s) {', '.join(sorted(unknown))}; expected any of "
                f"{', '.join(sorted(names))}"
            )
        for name in ("max_workers", "sample_size", "n_jobs", "chunksize"):
            value = values.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"`{name}` must be an int >= 1 or None, got {value!r}")
        if values.get("memory_limit") is not None:
            parse_memory(values["memory_limit"])  # "4G" is checked now, not when a map starts
        if values.get("backend") is not None and values["backend"] not in BACKENDS:
            raise ValueError(
                f"`backend` must be one of {', '.join(BACKENDS)} or None, got {values['backend']!r}"
            )
        history = values.get("history")
        if isinstance(history, Mapping):
            values["history"] = RunRecord.from_dict(history)
        elif history is not None and not isinstance(history, RunRecord):
            raise TypeError(
                f"`history` must be a RunRecord, its dict, or None, got {type(history).__name__}"
            )
        return cls(**values)


def check_options(options: Mapping[str, Any]) -> None:
    """Check the planner's options (``max_workers``, ``memory_limit``, ``sample_size``,
    ``backend``, ``n_jobs``, ``chunksize``, ``history``) as :func:`execute` would.

    The integrations call it when a task is declared, so that a DAG or flow with a bad option
    fails when it is loaded, not hours later when its task runs.

    Raises:
        TypeError, ValueError: naming the option, what was expected and what was got.
    """
    _Options.build(options)


def _check_callable(func: object) -> None:
    if not callable(func):
        raise TypeError(f"`func` must be callable (a function of one item), got {func!r}")


def _check_items(items: object) -> Iterable[Any]:
    if isinstance(items, (str, bytes)):
        raise TypeError(
            f"`items` must be an iterable of items, got a {type(items).__name__}; wrap a single "
            f"item in a list"
        )
    if not isinstance(items, Iterable):
        raise TypeError(f"`items` must be an iterable (a list, a generator, ...), got {items!r}")
    return items


# --- preparing: limits, evidence, dry run, model ------------------------------------------------


@dataclass
class _Prepared:
    plan: Plan
    limits: WorkerLimits
    results: list[Any]
    rest: Iterator[Any]
    n_items: int | None
    profile: Profile | None
    sample_seconds: float
    # What the model chose from, when it was free to choose (no plan or setting was fixed).
    situation: Situation | None = None
    options: _Options = _Options()
    # The dry run's calls along the input, at what each stretch cost (Sample.batches).
    sampled: list[Batch] = field(default_factory=list)


def _prepare(
    func: Callable[[Any], Any], items: Iterable[Any], options: _Options, plan: Plan | None = None
) -> _Prepared:
    identity = function_identity(func)
    if plan is not None:
        n_items = _length(items)
        limits = _read_limits(options)
        plan = _fit_to_limits(plan, limits)
        if not plan.function:
            plan = plan.with_changes(function=identity[0], function_digest=identity[1])
        return _Prepared(plan, limits, [], iter(items), n_items, None, 0.0, options=options)
    # Limits only take parallelism away: a map that is serial under the CPU affinity and the
    # available memory is serial under a cgroup's quotas too, and a cheap map is spared reading
    # them (a dozen files, 0.5 ms of a 35 ms map on this VM). A parallel plan reads them and is
    # made again (_decide_within). The items an iterator reads ahead are bounded by the real
    # memory: it reads them first.
    limits = _read_limits(options, read_cgroups=not isinstance(items, Sized))
    constraints = Constraints(options.backend, options.n_jobs, options.chunksize)
    fork_safe = fork_is_safe()
    processes_possible = not limits.daemonic and limits.cpus > 1
    iterator: Iterable[Any] = items
    if options.history is not None:
        profile, why, iterator = _usable_history(
            options.history,
            identity,
            items,
            processes_possible=processes_possible,
            fork_possible=fork_safe,
        )
        if profile is not None:
            n_items = _length(items)
            situation = Situation(
                profile,
                limits,
                get_calibration(),
                n_remaining=n_items if n_items is not None else options.history.n_items,
                n_items=n_items,
                parent_warm=False,
                fork_safe=fork_safe,
                observed_startup=_observed_startup(options.history),
                min_gain=_min_gain(options.history),
            )
            situation, made = _decide_within(
                func, situation, constraints, identity, options, source="history"
            )
            log.info("amorsize: %s: dry run skipped, %s; %s", identity[0], why, made.summary())
            free = situation if constraints == Constraints() else None
            return _Prepared(
                made, situation.limits, [], iter(iterator), n_items, profile, 0.0, free, options
            )
        log.info(
            "amorsize: %s: the previous run's record does not fit (%s); sampling", identity[0], why
        )

    parallelism = (limits.cpus, max_threads(limits))
    waited = blas_pools.settle()  # a BLAS pool spinning after earlier work is not the function's
    if waited:
        log.debug("amorsize: waited %.3fs for native threads to leave the CPUs", waited)
    dry = sample(
        func,
        iterator,
        sample_size=options.sample_size,
        parallelism=parallelism,
        processes_possible=processes_possible,
        fork_possible=fork_safe,
        memory_bytes=limits.memory_bytes,
    )
    done = len(dry.results)
    n_remaining = _remaining(dry)
    trivial = (
        constraints == Constraints()
        and n_remaining * dry.profile.seconds_per_item < TRIVIAL_SECONDS
    )
    situation = Situation(
        dry.profile,
        limits,
        None if trivial else get_calibration(),
        n_remaining=n_remaining,
        n_items=dry.n_items,
        spent_seconds=dry.profile.sample_seconds,
        fork_safe=fork_safe,
    )
    situation, made = _decide_within(func, situation, constraints, identity, options)
    if constraints == Constraints() and _in_doubt(made, dry):
        situation, made = _sample_on(func, dry, situation, identity, made)
        done, n_remaining = len(dry.results), situation.n_remaining
    if n_remaining == 0:
        made = made.with_changes(reason=f"Serial: all {done} items ran in the dry run.")
    log.info(
        "amorsize: %s: dry run of %d items in %.3fs; %s",
        identity[0],
        done,
        dry.profile.sample_seconds,
        made.summary(),
    )
    return _Prepared(
        made,
        situation.limits,
        dry.results,
        dry.rest,
        dry.n_items,
        dry.profile,
        dry.profile.sample_seconds,
        situation if constraints == Constraints() else None,
        options,
        dry.batches(),
    )


def _remaining(dry: Sample) -> int:
    """Items left to map after the dry run (at least, for an iterator of unknown length)."""
    known = dry.n_items if dry.n_items is not None else dry.n_items_lower_bound
    return known - len(dry.results)


def _in_doubt(made: Plan, dry: Sample) -> bool:
    """Whether a parallel plan's small gain rests on too few calls (see DOUBT_SPEEDUP)."""
    return (
        made.backend != "serial"
        and made.estimated_speedup < DOUBT_SPEEDUP
        and dry.steady_calls < DOUBT_STEADY_CALLS
        and _calls_to_settle(dry) > 0
    )


def _sample_on(
    func: Callable[[Any], Any],
    dry: Sample,
    situation: Situation,
    identity: tuple[str, str],
    doubted: Plan,
) -> tuple[Situation, Plan]:
    """Run more of the dry run for a plan in doubt, and decide again from all its calls."""
    steady_before = dry.steady_calls
    if not dry.extend(_calls_to_settle(dry)):
        return situation, doubted
    situation = replace(
        situation,
        profile=dry.profile,
        n_remaining=_remaining(dry),
        n_items=dry.n_items,
        spent_seconds=dry.profile.sample_seconds,
    )
    made = _decide(func, situation, Constraints(), identity)
    log.info(
        "amorsize: %s: %s was in doubt after %d steady calls; from %d: %s",
        identity[0],
        doubted.summary(),
        steady_before,
        dry.steady_calls,
        made.summary(),
    )
    return situation, made


def _calls_to_settle(dry: Sample) -> int:
    """More calls for a plan in doubt: up to DOUBT_STEADY_CALLS, within DOUBT_SHARE of the items."""
    total = dry.n_items if dry.n_items is not None else dry.n_items_lower_bound
    room = int(DOUBT_SHARE * total) - len(dry.results)
    return max(0, min(DOUBT_STEADY_CALLS - dry.steady_calls, room))


def _decide_within(
    func: Callable[[Any], Any],
    situation: Situation,
    constraints: Constraints,
    identity: tuple[str, str],
    options: _Options,
    source: str = "sampled",
) -> tuple[Situation, Plan]:
    """_decide, and if the plan is parallel but ``situation``'s limits are an upper bound, the
    plan made again under all the limits, with the situation it was made in."""
    made = _decide(func, situation, constraints, identity, source)
    if made.backend == "serial" or not situation.limits.upper_bound:
        return situation, made
    situation = replace(situation, limits=_read_limits(options))
    return situation, _decide(func, situation, constraints, identity, source)


def _read_limits(options: _Options, *, read_cgroups: bool = True) -> WorkerLimits:
    return detect(
        max_workers=options.max_workers,
        memory_limit=options.memory_limit,
        read_cgroups=read_cgroups,
    )


def _decide(
    func: Callable[[Any], Any],
    situation: Situation,
    constraints: Constraints,
    identity: tuple[str, str],
    source: str = "sampled",
) -> Plan:
    """The model's plan; one that starts fresh interpreters is weighed again with what they pay
    before their first call (_fresh_worker_startup), and must save at least that much.

    A start-up of a second or more, paid for a small gain, is only as good as the estimate of
    the calls: from 11 calls timed at 3.5 ms on a slow stretch (1.9 to 2.7 ms in later runs), the
    retraining flow's featurize_train went to loky workers (1.5 s to start and import
    scikit-learn) at an estimated 1.14x and achieved 0.59x. Saving at least its start-up, a plan
    on two workers still wins with calls half as costly as measured.
    """
    made = choose(situation, constraints, function=identity, source=source)
    if made.start_method != "loky" or situation.calibration is None:
        return made
    startup = _fresh_worker_startup(func, situation, made.n_jobs, identity[0])
    if startup is None:
        return made
    min_gain = situation.min_gain
    if made.serial_seconds > 0:
        min_gain = max(min_gain, startup / made.serial_seconds)
    return choose(
        replace(situation, observed_startup=("loky", startup), min_gain=min_gain),
        constraints,
        function=identity,
        source=source,
    )


def _fresh_worker_startup(
    func: Callable[[Any], Any], situation: Situation, n_jobs: int, name: str
) -> float | None:
    """Seconds fresh interpreters take before their first call: what a previous run of them
    showed, or else the calibrated start, the function's load (its code and imports, measured
    once) and its bound arguments (through the pipe, at the calibrated rate). None when the load
    cannot be measured.

    A run's record shows the start-up only when that run started them: one that ran serially,
    or forked, does not. Planned from such a record without the load, featurize_train went to
    loky workers estimated 1.75x and achieved 0.59x (1.75 s to start and import scikit-learn),
    its record sent the next run back to serial, and so on: every other night was slow.
    """
    observed = situation.observed_startup
    if observed is not None and observed[0] == "loky":
        return observed[1]
    calibration = situation.calibration
    assert calibration is not None
    loaded = fresh_load_seconds(func)
    if loaded is None:
        return None
    log.info("amorsize: %s: a fresh worker takes %.3fs to load it", name, loaded)
    bound = situation.profile.function_bytes / calibration.pipe_bytes_per_second
    return calibration.process_start_seconds("loky", n_jobs) + loaded + bound


def _fit_to_limits(plan: Plan, limits: WorkerLimits) -> Plan:
    """A stored plan may come from a bigger node: never exceed this worker's limits."""
    if plan.backend == "processes" and limits.daemonic:
        log.warning(
            "amorsize: processes cannot start in a daemonic process; running threads instead"
        )
        return plan.with_changes(
            backend="threads", start_method=None, reason=plan.reason + " Threads: daemonic process."
        )
    if plan.backend == "processes" and plan.n_jobs > limits.cpus:
        log.warning(
            "amorsize: the plan asks for %d processes, but this worker may use %d CPUs (%s)",
            plan.n_jobs,
            limits.cpus,
            limits.cpus_source,
        )
        return plan.with_changes(n_jobs=limits.cpus)
    return plan


def _usable_history(
    record: RunRecord,
    identity: tuple[str, str],
    items: Iterable[Any],
    *,
    processes_possible: bool,
    fork_possible: bool,
) -> tuple[Profile | None, str, Iterable[Any]]:
    """The profile of a previous run's record if it still describes this map (else None), why,
    and the items (re-chained)."""
    if record.function_digest != identity[1] or not record.profile:
        return None, f"it measured {record.function or 'another function'} or older code", items
    profile = Profile.from_dict(record.profile)
    if profile.lacks_gil_share(processes_possible=processes_possible, fork_possible=fork_possible):
        # Recorded where processes could fork, or before the probe ran in this case; sampled
        # once, the next record carries the share.
        return None, "it did not measure whether the calls hold the GIL, as threads need", items
    iterator = iter(items)
    try:
        first = next(iterator)
    except StopIteration:
        return profile, "no items", []
    rechained: Iterable[Any] = items if isinstance(items, Sized) else _prepend(first, iterator)
    recorded = float(record.profile.get("bytes_in_per_item", 0.0))
    try:
        size = len(pickle.dumps(first, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        size = 0
    if (
        recorded > 0
        and size > 0
        and not (1 / HISTORY_SIZE_TOLERANCE <= size / recorded <= HISTORY_SIZE_TOLERANCE)
    ):
        return None, f"items are {size / recorded:.1f}x the size it measured", rechained
    return (
        profile,
        f"starting from the run of {record.finished_at} ({record.n_items} items)",
        rechained,
    )


def _length(items: Iterable[Any]) -> int | None:
    return len(items) if isinstance(items, Sized) else None


def _prepend(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _min_gain(record: RunRecord) -> float:
    """What a parallel plan must save to be chosen from ``record`` (SWITCH_FROM_SERIAL_SPEEDUP)."""
    return 1 - 1 / SWITCH_FROM_SERIAL_SPEEDUP if record.backend == "serial" else MIN_GAIN


def _observed_startup(record: RunRecord) -> tuple[str, float] | None:
    if record.backend == "processes" and record.start_method and record.startup_seconds > 0:
        return record.start_method, record.startup_seconds
    return None


# --- running --------------------------------------------------------------------------------------


class MapIterator(Iterator[Any]):
    """Results in input order, computed lazily; ``plan`` now (replaced if a serial plan is
    re-planned), ``record`` once exhausted."""

    def __init__(
        self,
        func: Callable[[Any], Any],
        prepared: _Prepared,
        started: float,
        progress: Progress,
        cancel: threading.Event | None,
    ) -> None:
        self.plan = prepared.plan
        self._func = func
        self._prepared = prepared
        self._started = started
        self._stats = RunStats()
        self._progress = progress
        self._cancel = cancel
        self._sampled = len(prepared.results)
        self._wall_seconds: float | None = None  # set when the last result is out
        self._record: RunRecord | None = None
        self._chunks = self._generate()
        self._results = itertools.chain.from_iterable(self._chunks)

    @property
    def record(self) -> RunRecord | None:
        """What the run really cost; None until the iterator is exhausted.

        Built on first use (about 0.1 ms in a fresh process): a plain ``execute`` never asks.
        """
        if self._record is None and self._wall_seconds is not None:
            self._record = _record(
                self.plan, self._prepared, self._stats, self._wall_seconds, self._sampled
            )
        return self._record

    def __next__(self) -> Any:
        return next(self._results)

    def chunks(self) -> Iterator[list[Any]]:
        """The results a chunk at a time (what :func:`run` extends its list with)."""
        return self._chunks

    def close(self) -> None:
        """Stop the map now; workers are killed, pending items are dropped."""
        self._chunks.close()

    def _replanner(self, stack: contextlib.ExitStack) -> Replanner | None:
        """For a serial plan the model chose, the :class:`_SerialReplanner` that may switch it."""
        prepared = self._prepared
        if self.plan.backend != "serial" or prepared.situation is None or prepared.n_items is None:
            return None

        def adopt(plan: Plan) -> None:
            stack.enter_context(_sigterm_cancels(plan.backend == "processes"))
            self.plan = plan

        return _SerialReplanner(
            self._func, prepared, self._sampled, self._stats, self._started, adopt
        )

    def _generate(self) -> Generator[list[Any], None, None]:
        prepared = self._prepared
        done = self._sampled
        with contextlib.ExitStack() as stack:
            on_chunk = stack.enter_context(
                _progress_reporter(self._progress, prepared.n_items, done)
            )
            stack.enter_context(_sigterm_cancels(self.plan.backend == "processes"))
            dry_results, prepared.results = prepared.results, []  # keep memory bounded
            if self.plan.backend != "serial":
                yield dry_results
                dry_results = []
            # A serial map extends the dry run's results in place: a long cheap map's results
            # are not copied from one list to another.
            yield from run_plan(
                self.plan,
                self._func,
                prepared.rest,
                start_index=done,
                stats=self._stats,
                cancel=self._cancel,
                on_chunk=on_chunk,
                cpus=prepared.limits.cpus,
                into=dry_results,
                replan=self._replanner(stack),
                cap_loaded_pools=_may_run_own_threads(prepared.profile),
            )
        self._wall_seconds = time.perf_counter() - self._started
        if log.isEnabledFor(logging.INFO):
            record = self.record
            assert record is not None
            log.info(
                "amorsize: %s: %d items in %.3fs, achieved speedup %.2fx (estimated %.2fx)",
                self.plan.function,
                record.n_items,
                record.wall_seconds,
                record.achieved_speedup,
                self.plan.estimated_speedup,
            )


class _SerialReplanner:
    """Weighs a serial plan the model chose again, once calls run REPLAN_FACTOR times slower than
    the dry run measured, from what the serial batches measured; a parallel plan it makes is
    handed to ``adopt`` and run instead."""

    def __init__(
        self,
        func: Callable[[Any], Any],
        prepared: _Prepared,
        sampled: int,
        stats: RunStats,
        started: float,
        adopt: Callable[[Plan], None],
    ) -> None:
        assert prepared.situation is not None and prepared.n_items is not None
        self._func, self._prepared, self._sampled = func, prepared, sampled
        self._stats, self._started, self._adopt = stats, started, adopt
        self._situation, self._n_items = prepared.situation, prepared.n_items
        self._planned = self._situation.profile.seconds_per_item
        self._threshold = REPLAN_FACTOR * self._planned
        first, *later = prepared.sampled or [Batch(0, sampled, self._planned)]
        self._batches = RisingBatches(first)
        for batch in later:
            self._batches.add(batch)

    def alarm(self) -> tuple[float, float] | None:
        """Calls so slow that their batch is weighed at once (see Replanner.alarm)."""
        if self._planned < WATCHED_CALL_SECONDS:
            return None
        return self._threshold, REPLAN_MIN_SECONDS

    def __call__(self, done: int, batch_items: int, batch_seconds: float) -> Plan | None:
        situation = self._situation
        if done == batch_items and not self._sampled:
            # The process's first call, which a dry run would have timed apart: its warm-up
            # (a model loaded lazily) says nothing of the rest. Planned from a record, the
            # retraining flow's first feature took 6.9 ms against 1.5 planned, and the rest
            # went to loky workers: 3.4 s where serial took 2.0. Alone in its batch it is all
            # warm-up, however much longer than the record's it took.
            if batch_items == 1:
                return None
            batch_seconds = max(0.0, batch_seconds - situation.profile.warmup_seconds)
        seconds_per_item = batch_seconds / batch_items
        self._batches.add(Batch(done - batch_items, batch_items, seconds_per_item))
        slow = seconds_per_item >= self._threshold and batch_seconds >= REPLAN_MIN_SECONDS
        if not slow or done >= self._n_items:
            return None
        self._threshold = REPLAN_AGAIN * seconds_per_item
        stats = self._stats
        # Not the mean of all batches: where calls grow along the input (sorted by size),
        # the latest, and the trend, tell most about the rest.
        rest = self._batches.rest_seconds_per_item(self._n_items)
        profile = replace(
            situation.profile,
            seconds_per_item=rest,
            cpu_seconds_per_item=rest * stats.cpu_ratio,
            # Calls this far from what the dry run saw vary at least as much as they cost.
            seconds_stdev=max(situation.profile.seconds_stdev, rest),
        )
        later = replace(
            situation,
            profile=profile,
            calibration=situation.calibration or get_calibration(),
            n_remaining=self._n_items - done,
            spent_seconds=time.perf_counter() - self._started,
            parent_warm=True,  # the caller has run the function: forked workers inherit that
            fork_safe=fork_is_safe(),
            min_gain=MIN_GAIN,  # calls measured slower now, not a record's noise
        )
        serial = self._prepared.plan
        identity = (serial.function, serial.function_digest)
        _, plan = _decide_within(self._func, later, Constraints(), identity, self._prepared.options)
        if plan.backend == "serial":
            return None
        plan = plan.with_changes(
            reason=f"Re-planned after {done} items (planned for {duration_text(self._planned)} "
            f"a call). {plan.reason}"
        )
        log.info("amorsize: %s: %s", plan.function, plan.reason)
        self._adopt(plan)
        return plan


class _ProgressBar(tqdm):
    """tqdm's bar without its monitor thread, which outlives every bar: with another thread
    alive, a process must not fork (fork_is_safe), so after one map with a progress bar every
    later map in the process started fresh interpreters (a second or more each, with imports)
    instead of forking workers. The monitor only adjusts bars updated rarely; ours update on
    every chunk."""

    monitor_interval = 0


@contextlib.contextmanager
def _progress_reporter(
    progress: Progress, total: int | None, initial: int
) -> Iterator[Callable[[int], None] | None]:
    if progress is False:
        yield None
        return
    if progress is True:
        with _ProgressBar(total=total, initial=initial, unit="item", desc="amorsize") as bar:
            yield bar.update
        return
    done = initial

    def report(n_items: int) -> None:
        nonlocal done
        done += n_items
        progress(done, total)

    yield report


@contextlib.contextmanager
def _sigterm_cancels(needed: bool) -> Iterator[None]:
    """Make SIGTERM raise in the caller during the map, so that the workers are killed.

    Python's default SIGTERM action ends the process at once, skipping every clean-up and leaving
    process workers orphaned. Only the default is replaced: an orchestrator's own handler (Airflow,
    Prefect) stays in charge, and cancels the map through ``cancel`` or its own exception.
    """
    in_main = threading.current_thread() is threading.main_thread()
    # Serial and thread maps leave no process behind; and the first signal call costs ~6 ms.
    if not needed or not in_main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def raise_cancelled(signum: int, frame: object) -> None:
        raise MapCancelledError("SIGTERM received: the map was stopped and its workers killed")

    signal.signal(signal.SIGTERM, raise_cancelled)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _may_run_own_threads(profile: Profile | None) -> bool:
    """Whether the function may run BLAS/OpenMP threads of its own: unknown without a profile."""
    return profile is None or profile.runs_own_threads


def _serial_cost_per_call(
    plan: Plan, profile: Profile | None, stats: RunStats
) -> tuple[float, float]:
    """Wall and CPU seconds of a call in this map, as a serial run would pay them.

    A thread's chunks are timed on the wall clock, which runs on while the thread waits for a CPU
    or for the GIL the other threads hold: the retraining flow's cv_score, on 3 threads of 2 CPUs,
    read 0.39 s a call where a serial run took 0.19, and its record planned the next run on more
    threads still. A thread's own CPU clock stops meanwhile; divided by the share of a call's
    wall time the dry run saw on the CPU, it is the call's cost on its own CPU (0.21 to 0.28 s
    there: calls side by side still slow each other). Only for busy calls: calls that mostly wait
    leave the CPUs to the other threads, and their few microseconds of CPU, scaled up by a small
    share, would be noise. Nor for calls that run threads of their own (BLAS), whose CPU the
    calling thread's clock does not see.

    Elsewhere, as in the dry run, the CPU seconds count the calls' waits for a CPU (run_queue):
    on a busy node a serial run's calls would otherwise read as waiting, and the next run from
    this record would plan threads that have no CPU to run on.
    """
    per_item = stats.compute_seconds / stats.items
    if (
        plan.backend == "threads"
        and profile is not None
        and profile.busy
        and not profile.runs_own_threads
    ):
        cpu_per_item = stats.cpu_seconds / stats.items
        return min(per_item, cpu_per_item / profile.cpu_ratio), cpu_per_item
    return per_item, per_item * stats.cpu_ratio


def _record(
    plan: Plan, prepared: _Prepared, stats: RunStats, wall: float, sampled: int
) -> RunRecord:
    profile = prepared.profile or (Profile.from_dict(plan.profile) if plan.profile else None)
    n_items = sampled + stats.items
    if stats.items:
        per_item, cpu_per_item = _serial_cost_per_call(plan, profile, stats)
    elif profile is not None:
        per_item, cpu_per_item = profile.seconds_per_item, profile.cpu_seconds_per_item
    else:
        per_item = cpu_per_item = 0.0
    if profile is not None and prepared.sample_seconds > 0:
        serial = profile.first_call_seconds + max(0, n_items - 1) * per_item
    else:
        serial = (profile.warmup_seconds if profile else 0.0) + n_items * per_item
    corrected = (
        replace(profile, seconds_per_item=per_item, cpu_seconds_per_item=cpu_per_item).to_dict()
        if profile is not None
        else {}
    )
    return RunRecord(
        function=plan.function,
        function_digest=plan.function_digest,
        n_items=n_items,
        backend=plan.backend,
        n_jobs=plan.n_jobs,
        chunksize=plan.chunksize,
        start_method=plan.start_method,
        source=plan.source,
        wall_seconds=wall,
        sample_seconds=prepared.sample_seconds,
        map_seconds=max(0.0, stats.finished_at - stats.started_at),
        startup_seconds=stats.startup_seconds,
        sampled_items=sampled,
        seconds_per_item=per_item,
        cpu_seconds_per_item=cpu_per_item,
        serial_seconds_estimate=serial,
        achieved_speedup=serial / wall if wall > 0 else 0.0,
        estimated_speedup=plan.estimated_speedup,
        limits=prepared.limits.to_dict(),
        profile=corrected,
    )
