"""Every import a map of the package may need, done before a benchmark's clock starts.

The package loads most of its modules and libraries where a map first needs them, so that a task
process pays only for what it uses (docs/decisions.md#import-cost). A benchmark times the map
alone, imports done beforehand, for the peers (``multiprocessing``, joblib) and for ``execute``
alike: this loads what ``execute`` would load during its first map.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["preload_amorsize"]

INTEGRATIONS = tuple(f"amorsize_flows.{name}" for name in ("airflow", "prefect", "examples"))
# What the package imports inside functions, where a map first needs it.
LAZY_LIBRARIES = (
    "cloudpickle",
    "loky",
    "platformdirs",
    "psutil",
    "statistics",
    "subprocess",
    "tempfile",
    "threadpoolctl",
)


def preload_amorsize() -> None:
    """Import every module of the core (not the integrations) and the libraries it loads lazily."""
    import amorsize_flows

    for module in pkgutil.walk_packages(amorsize_flows.__path__, "amorsize_flows."):
        if not module.name.startswith(INTEGRATIONS):
            importlib.import_module(module.name)
    for library in LAZY_LIBRARIES:
        importlib.import_module(library)
