"""The model's plan, guarded: fresh interpreters must save what they pay to start, a plan made
under upper-bound limits is made again under all of them, and a stored plan never exceeds this
worker's limits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..data.options import Options
from ..data.plan import Plan
from ..measure.limits import WorkerLimits, detect, less_other_work
from .model import choose
from .situation import Constraints, Situation

__all__ = ["Identity", "decide", "decide_within", "fit_to_limits", "read_limits"]

log = logging.getLogger(__name__)

Identity = tuple[str, str]  # a function's (module:qualname, digest of its code)


def read_limits(options: Options, *, upper_bound: bool = False) -> WorkerLimits:
    """This worker's limits under the caller's caps (see ``limits.detect``)."""
    return detect(
        max_workers=options.max_workers,
        memory_limit=options.memory_limit,
        upper_bound=upper_bound,
    )


def decide_within(
    func: Callable[[Any], Any],
    situation: Situation,
    constraints: Constraints,
    identity: Identity,
    options: Options,
    source: str = "sampled",
    busy_cpus: float | None = None,
) -> tuple[Situation, Plan]:
    """:func:`decide`; and where the plan is parallel but the limits were read as an upper
    bound, the plan made again under all of them (less ``busy_cpus``, the CPUs other processes
    were seen to keep busy). Returns the situation the plan was made in."""
    made = decide(func, situation, constraints, identity, source)
    if made.backend == "serial" or not situation.limits.upper_bound:
        return situation, made
    situation = replace(situation, limits=less_other_work(read_limits(options), busy_cpus))
    return situation, decide(func, situation, constraints, identity, source)


def decide(
    func: Callable[[Any], Any],
    situation: Situation,
    constraints: Constraints,
    identity: Identity,
    source: str = "sampled",
) -> Plan:
    """The model's plan; one that starts fresh interpreters is weighed again with what they pay
    before their first call, and must save at least that much: its gain is only as good as the
    estimate of the calls (docs/decisions.md#fresh-interpreters-must-pay-for-themselves)."""
    made = choose(situation, constraints, function=identity, source=source)
    if made.start_method != "loky" or situation.calibration is None:
        return made
    saving = max(0.0, made.serial_seconds - made.predicted_seconds)
    startup = fresh_worker_startup(func, situation, made.n_jobs, identity[0], saving)
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


def fresh_worker_startup(
    func: Callable[[Any], Any],
    situation: Situation,
    n_jobs: int,
    name: str,
    saving: float = float("inf"),
) -> float | None:
    """Seconds fresh interpreters take before their first call: what a previous run of them
    showed, or else the calibrated start, the function's load (its code and imports, measured
    once) and its bound arguments (through the pipe). None where the load cannot be measured.

    A record shows the start-up only where its run started fresh interpreters: one that ran
    serially, or forked, does not (docs/decisions.md#fresh-interpreters-must-pay-for-themselves).
    """
    observed = situation.observed_startup
    if observed is not None and observed[0] == "loky":
        return observed[1]
    calibration = situation.calibration
    assert calibration is not None
    from ..measure.worker_start import fresh_load_seconds  # only for fresh interpreters

    loaded = fresh_load_seconds(func, budget=saving)  # past what they could save, no matter
    if loaded is None:
        return None
    log.info("amorsize: %s: a fresh worker takes %.3fs to load it", name, loaded)
    bound = situation.profile.function_bytes / calibration.pipe_bytes_per_second
    return calibration.process_start_seconds("loky", n_jobs) + loaded + bound


def fit_to_limits(plan: Plan, limits: WorkerLimits) -> Plan:
    """A stored plan may come from a bigger node: never exceed this worker's limits."""
    if plan.backend == "processes" and limits.in_pool_worker:
        log.warning("amorsize: no process pool can start in another map's worker; using threads")
        return plan.with_changes(
            backend="threads",
            start_method=None,
            reason=f"{plan.reason} Threads: inside another map's worker process.",
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
