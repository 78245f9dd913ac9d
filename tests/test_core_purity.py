"""The core imports no orchestrator, its workers import little; the integrations name the extra."""

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


def test_a_process_worker_imports_the_runner_without_the_planner() -> None:
    # A fresh worker unpickles the runner's functions, so it imports the package: the planner,
    # jsonschema and tqdm would cost each one about 0.1 s before its first item.
    done = _run(
        """
        import amorsize_flows.execution.worker_process
        heavy = {"amorsize_flows.api", "amorsize_flows.decide.model", "jsonschema", "tqdm"}
        assert not heavy & set(sys.modules), heavy & set(sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr


def test_the_public_names_load_no_library_a_map_may_not_need() -> None:
    # Each of these costs milliseconds to import in every task process (docs/decisions.md#import-cost);
    # they load where a map needs them: a stored plan read, a progress bar, processes started.
    done = _run(
        """
        import amorsize_flows as amz
        amz.execute, amz.Plan, amz.worker_limits
        lazy = {"jsonschema", "tqdm", "loky", "cloudpickle", "psutil", "threadpoolctl",
                "platformdirs", "statistics", "concurrent.futures", "subprocess"}
        assert not lazy & set(sys.modules), lazy & set(sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr


def test_a_cheap_serial_map_loads_no_executor() -> None:
    done = _run(
        """
        import amorsize_flows as amz
        assert amz.execute(abs, range(-20_000, 0)) == list(range(20_000, 0, -1))
        executors = {"loky", "concurrent.futures", "tqdm", "jsonschema"}
        assert not executors & set(sys.modules), executors & set(sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr


def test_a_public_name_is_never_shadowed_by_a_subpackage() -> None:
    # ``run`` loads the layers below it, among them the ``execution`` subpackage: the function
    # ``execute`` must stay what ``amz.execute`` names, whichever name is asked for first.
    done = _run(
        """
        import amorsize_flows as amz
        assert amz.run(abs, [-1]).results == [1]
        for name in amz.__all__:
            assert not isinstance(getattr(amz, name), type(amz)), name
        assert amz.execute(abs, [-2]) == [2]
        """
    )
    assert done.returncode == 0, done.stderr


def test_every_public_name_resolves() -> None:
    done = _run(
        """
        import amorsize_flows as amz
        for name in amz.__all__:
            getattr(amz, name)
        assert set(amz.__all__) <= set(dir(amz))
        try:
            amz.no_such_name
        except AttributeError as error:
            assert "no_such_name" in str(error)
        else:
            raise AssertionError("a missing name resolved")
        """
    )
    assert done.returncode == 0, done.stderr
