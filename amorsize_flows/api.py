"""The public entry points: ``optimize``, ``execute``, ``run`` and ``imap``.

They wire the rooms together: the worker's limits, the dry run (or a previous run's evidence),
the model, the runner, and the record of what the run really cost.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field, replace
from typing import Any

from . import blas_pools
from .calibrate import get_calibration
from .errors import MapCancelledError
from .history import min_gain, observed_startup, usable_history
from .limits import WorkerLimits, detect
from .model import Constraints, Situation, choose, max_threads
from .options import Options, check_callable, check_items
from .plan import Plan, RunRecord
from .profile import Profile, Sample, function_identity, sample
from .progress import Progress, progress_reporter
from .record import build_record
from .replan import SerialReplanner
from .runner import Replanner, RunStats, fork_is_safe, run_plan
from .trend import Batch
from .worker_start import fresh_load_seconds

__all__ = ["MapIterator", "MapRun", "execute", "imap", "optimize", "run"]

log = logging.getLogger(__name__)

# Below this much work left, no pool can save the model's 10% minimum gain: starting and joining
# even two threads costs about 0.4 ms here (calibration), so the machine need not be measured.
TRIVIAL_SECONDS = 1e-3
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
    check_callable(func)
    prepared = _prepare(func, check_items(items), Options.build(locals()))
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
    check_callable(func)
    checked = Options.build(options)
    if plan is not None and not isinstance(plan, Plan):
        raise TypeError(f"`plan` must be an amorsize_flows.Plan or None, got {type(plan).__name__}")
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"`progress` must be a bool or a callable (done, total), got {progress!r}")
    if cancel is not None and not isinstance(cancel, threading.Event):
        raise TypeError(f"`cancel` must be a threading.Event or None, got {type(cancel).__name__}")
    started = time.perf_counter()
    prepared = _prepare(func, check_items(items), checked, plan)
    return MapIterator(func, prepared, started, progress, cancel)


# --- preparing: limits, evidence, dry run, model ------------------------------------------------


@dataclass
class _Prepared:
    """A map ready to run: its plan, the limits, the dry run's results and the items left."""

    plan: Plan
    limits: WorkerLimits
    results: list[Any]
    rest: Iterator[Any]
    n_items: int | None
    profile: Profile | None
    sample_seconds: float
    # What the model chose from, when it was free to choose (no plan or setting was fixed).
    situation: Situation | None = None
    options: Options = field(default_factory=Options)
    # The dry run's calls along the input, at what each stretch cost (Sample.batches).
    sampled: list[Batch] = field(default_factory=list)


def _prepare(
    func: Callable[[Any], Any], items: Iterable[Any], options: Options, plan: Plan | None = None
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
    # physical memory is serial under a cgroup's quotas and the memory free now too, and a cheap
    # map is spared reading them (a dozen files, 0.6 ms of a 30 ms map on this VM). A parallel
    # plan reads them and is made again (_decide_within). The items an iterator reads ahead are
    # bounded by the real memory: it reads them first.
    limits = _read_limits(options, upper_bound=isinstance(items, Sized))
    constraints = Constraints(options.backend, options.n_jobs, options.chunksize)
    fork_safe = fork_is_safe()
    processes_possible = not limits.daemonic and limits.cpus > 1
    iterator: Iterable[Any] = items
    if options.history is not None:
        profile, why, iterator = usable_history(
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
                observed_startup=observed_startup(options.history),
                min_gain=min_gain(options.history),
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
    options: Options,
    source: str = "sampled",
) -> tuple[Situation, Plan]:
    """_decide, and if the plan is parallel but ``situation``'s limits are an upper bound, the
    plan made again under all the limits, with the situation it was made in."""
    made = _decide(func, situation, constraints, identity, source)
    if made.backend == "serial" or not situation.limits.upper_bound:
        return situation, made
    situation = replace(situation, limits=_read_limits(options))
    return situation, _decide(func, situation, constraints, identity, source)


def _read_limits(options: Options, *, upper_bound: bool = False) -> WorkerLimits:
    return detect(
        max_workers=options.max_workers,
        memory_limit=options.memory_limit,
        upper_bound=upper_bound,
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


def _length(items: Iterable[Any]) -> int | None:
    return len(items) if isinstance(items, Sized) else None


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
            prepared = self._prepared
            self._record = build_record(
                self.plan,
                prepared.profile,
                prepared.limits,
                self._stats,
                wall=self._wall_seconds,
                sampled=self._sampled,
                sample_seconds=prepared.sample_seconds,
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
        """For a serial plan the model chose, the :class:`SerialReplanner` that may switch it."""
        prepared = self._prepared
        if self.plan.backend != "serial" or prepared.situation is None or prepared.n_items is None:
            return None
        identity = (self.plan.function, self.plan.function_digest)

        def decide(later: Situation) -> Plan:
            return _decide_within(self._func, later, Constraints(), identity, prepared.options)[1]

        def adopt(plan: Plan) -> None:
            stack.enter_context(_signals_stop_the_map(plan.backend == "processes", self._cancel))
            self.plan = plan

        return SerialReplanner(
            prepared.situation,
            prepared.n_items,
            prepared.sampled,
            self._stats,
            self._started,
            decide,
            adopt,
        )

    def _generate(self) -> Generator[list[Any], None, None]:
        prepared = self._prepared
        done = self._sampled
        with contextlib.ExitStack() as stack:
            on_chunk = stack.enter_context(
                progress_reporter(self._progress, prepared.n_items, done)
            )
            processes = self.plan.backend == "processes"
            # Where the caller gave no event, one of the map's own, for a signal to set (see
            # _signals_stop_the_map); serial maps go without: a cancel event makes them poll.
            cancel = threading.Event() if processes and self._cancel is None else self._cancel
            stack.enter_context(_signals_stop_the_map(processes, cancel))
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
                cancel=cancel,
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


@contextlib.contextmanager
def _signals_stop_the_map(needed: bool, cancel: threading.Event | None) -> Iterator[None]:
    """Make SIGTERM and Ctrl-C (SIGINT) stop the map in the caller, so that the workers are killed.

    Python's default SIGTERM action ends the process at once, skipping every clean-up and leaving
    process workers orphaned. Only default handlers are replaced: an orchestrator's own (Airflow,
    Prefect) stays in charge, and cancels the map through ``cancel`` or its own exception.

    A handler raises where the caller happens to be, and some places swallow what is raised
    there: logging's at-fork hook runs in the caller after each worker is forked, and a Ctrl-C
    that landed in it was printed as ignored while the map ran on (1 time in 20 here, under
    load). So the handler also sets ``cancel``, which the runner polls; its MapCancelledError is
    then turned into what the signal would have raised.
    """
    in_main = threading.current_thread() is threading.main_thread()
    replaced = {
        signum: handler
        for signum, handler in (
            (signal.SIGTERM, signal.SIG_DFL),
            (signal.SIGINT, signal.default_int_handler),
        )
        if signal.getsignal(signum) is handler
    }
    # Serial and thread maps leave no process behind; and the first signal call costs ~6 ms.
    if not needed or not in_main or not replaced:
        yield
        return
    raised: list[BaseException] = []

    def stop_the_map(signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            error: BaseException = KeyboardInterrupt()
        else:
            error = MapCancelledError(
                "SIGTERM received: the map was stopped and its workers killed"
            )
        raised.append(error)
        if cancel is not None:
            cancel.set()
        raise error

    for signum in replaced:
        signal.signal(signum, stop_the_map)
    try:
        yield
    except MapCancelledError as error:
        if raised and error is not raised[0]:
            raise raised[0] from None  # the runner saw ``cancel``: the signal's own error
        raise
    finally:
        for signum, handler in replaced.items():
            signal.signal(signum, handler)


def _may_run_own_threads(profile: Profile | None) -> bool:
    """Whether the function may run BLAS/OpenMP threads of its own: unknown without a profile."""
    return profile is None or profile.runs_own_threads
