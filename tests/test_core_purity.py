"""The core imports no orchestrator; the integrations say which extra is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK_ORCHESTRATORS = textwrap.dedent(
    """
    import sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("airflow", "prefect"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Refuse())
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_ORCHESTRATORS + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_core_works_without_airflow_or_prefect() -> None:
    done = _run(
        """
        import amorsize_flows as amz
        assert amz.execute(abs, [-1, -2]) == [1, 2]
        assert not any(m.split(".")[0] in ("airflow", "prefect") for m in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr


def test_integrations_name_the_missing_extra() -> None:
    for module, extra in (
        ("amorsize_flows.airflow", "airflow"),
        ("amorsize_flows.prefect", "prefect"),
    ):
        done = _run(f"import {module}")
        assert done.returncode != 0
        assert f'pip install "amorsize-flows[{extra}]"' in done.stderr, done.stderr
