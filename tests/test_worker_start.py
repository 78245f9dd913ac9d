"""What a fresh worker pays to load a function: measured in a real fresh interpreter, once."""

from __future__ import annotations

import functools
import json

from amorsize_flows.measure.calibration import cache_path
from amorsize_flows.measure.worker_start import fresh_load_seconds


def _measured() -> dict[str, float]:
    store = cache_path().with_name("worker-start.json")
    return json.loads(store.read_text()) if store.exists() else {}


def test_the_load_counts_the_function_s_imports_and_is_measured_once_per_code() -> None:
    # tests.slow_import sleeps 1 s on import, as a module importing scikit-learn takes.
    from tests.slow_import import IMPORT_SECONDS, busy_after_slow_import

    tonight = functools.partial(busy_after_slow_import, seconds=0.001)
    loaded = fresh_load_seconds(tonight)
    assert loaded is not None and loaded >= IMPORT_SECONDS
    entries = len(_measured())
    # The next night binds other data to the same code: not measured again.
    tomorrow = functools.partial(busy_after_slow_import, seconds=0.002)
    assert fresh_load_seconds(tomorrow) == loaded
    assert fresh_load_seconds(busy_after_slow_import) == loaded
    assert len(_measured()) == entries


def test_a_function_that_loads_fast_is_told_apart() -> None:
    from tests.slow_import import IMPORT_SECONDS
    from tests.workloads import square

    loaded = fresh_load_seconds(square)
    assert loaded is not None and loaded < IMPORT_SECONDS


def test_the_probe_stops_at_what_fresh_workers_could_save_and_remembers_the_bound() -> None:
    # A one-second map could save at most 0.3 s on fresh workers: learning that their load takes
    # 1 s must not cost a second.
    import time

    from tests.slow_import import IMPORT_SECONDS, hash_after_slow_import

    started = time.perf_counter()
    assert fresh_load_seconds(hash_after_slow_import, budget=0.3) == 0.3
    assert time.perf_counter() - started < IMPORT_SECONDS
    started = time.perf_counter()
    assert fresh_load_seconds(hash_after_slow_import, budget=0.2) == 0.3  # the bound, no probe
    assert time.perf_counter() - started < 0.1
    # A map that could save more measures it whole.
    assert fresh_load_seconds(hash_after_slow_import, budget=30) >= IMPORT_SECONDS
