"""Provider metadata for Airflow's provider manager: a plain dict, no imports (it is read at start)."""

from __future__ import annotations


def get_provider_info() -> dict[str, object]:
    """What ``airflow providers list`` shows, and the ``@task.amorsize`` TaskFlow decorator."""
    return {
        "package-name": "amorsize-flows",
        "name": "amorsize-flows",
        "description": (
            "Measure a function, plan its parallel map inside the worker's real CPU and memory "
            "limits, and run it: AmorsizeOperator and @task.amorsize."
        ),
        "versions": ["0.1.0"],
        "operators": [
            {
                "integration-name": "amorsize-flows",
                "python-modules": ["amorsize_flows.airflow.operators"],
            }
        ],
        "task-decorators": [
            {"name": "amorsize", "class-name": "amorsize_flows.airflow.decorators.amorsize_task"}
        ],
    }
