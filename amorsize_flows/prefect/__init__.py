"""Prefect 3 integration: ``@amorsize_task`` maps a function of one item inside one task run.

>>> from amorsize_flows.prefect import amorsize_task
>>> @amorsize_task(retries=2)
... def featurize(image):
...     return extract_features(image)

Each run publishes its plan and what it cost as the table artifact ``amorsize-<task-name>`` and keeps
its record in a Prefect Variable named by the flow, the deployment and the task
(``amorsize-<flow>-<task>``), where the next run starts from.
"""

from __future__ import annotations

_INSTALL_HINT = 'pip install "amorsize-flows[prefect]"'

try:
    import prefect
except ImportError as error:  # the core works without Prefect; only this module needs it
    raise ImportError(
        f"amorsize_flows.prefect needs Prefect 3, which is not installed: {_INSTALL_HINT}"
    ) from error

if not prefect.__version__.startswith("3."):
    raise ImportError(
        f"amorsize_flows.prefect needs Prefect 3, found Prefect {prefect.__version__}: "
        f"{_INSTALL_HINT}"
    )

from ._history import variable_name  # noqa: E402
from .artifacts import artifact_key, plan_row  # noqa: E402
from .tasks import AmorsizeTask, MapOptions, amorsize_task  # noqa: E402

__all__ = [
    # the decorator and the task it makes
    "amorsize_task",
    "AmorsizeTask",
    "MapOptions",
    # where a task's plan and record are kept
    "artifact_key",
    "plan_row",
    "variable_name",
]
