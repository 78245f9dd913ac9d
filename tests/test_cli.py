"""The command line, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amorsize_flows", *args], capture_output=True, text=True, timeout=120
    )


def test_limits_as_json() -> None:
    done = _cli("limits", "--json")
    assert done.returncode == 0
    limits = json.loads(done.stdout)
    assert limits["cpus"] >= 1 and limits["cpus_source"] and limits["memory_bytes"] > 0


def test_plan_as_table_and_json() -> None:
    table = _cli("plan", "tests.workloads:busy", "--items", json.dumps([0.004] * 60))
    assert table.returncode == 0, table.stderr
    assert "backend" in table.stdout and "reason" in table.stdout
    as_json = _cli("plan", "tests.workloads:square", "--range", "1000", "--json")
    plan = json.loads(as_json.stdout)
    assert plan["backend"] == "serial" and plan["function"] == "tests.workloads:square"


def test_bad_function_is_a_clear_error() -> None:
    done = _cli("plan", "tests.workloads:missing", "--range", "3")
    assert done.returncode == 2
    assert "has no attribute 'missing'" in done.stderr
    done = _cli("plan", "no_colon", "--range", "3")
    assert "MODULE:FUNC" in done.stderr
