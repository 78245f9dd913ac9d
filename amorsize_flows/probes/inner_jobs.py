"""The CPUs a call's own joblib parallelism may use: scikit-learn's estimators and model
selection follow joblib's ``parallel_config`` where their ``n_jobs`` is None.

A serial map gives each call every CPU, a pool worker its share, a thread none (joblib's config
is per thread): outer workers times inner jobs never exceed the CPUs. Threads, not loky's
processes, so that a call never starts a process pool of its own inside a map's worker.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["inner_jobs"]


@contextlib.contextmanager
def inner_jobs(n_jobs: int) -> Iterator[None]:
    """Let joblib-parallel calls made here use ``n_jobs`` threads (a no-op until the function's
    code has imported joblib: a function that imports it on its first call gets the budget
    from its next batch on)."""
    joblib = sys.modules.get("joblib")
    config = getattr(joblib, "parallel_config", None)
    if config is None:
        yield
        return
    with config(backend="threading", n_jobs=max(1, n_jobs)):
        yield
