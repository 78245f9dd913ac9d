"""The calibration: measured in a fresh interpreter, cached, re-measured when unreadable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amorsize_flows.measure import calibration as calibrate


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(calibrate.CACHE_DIR_ENV, str(tmp_path))
    calibrate._cached.cache_clear()
    yield tmp_path
    calibrate._cached.cache_clear()


def test_measures_once_and_caches(fresh_cache: Path) -> None:
    first = calibrate.get_calibration()
    path = calibrate.cache_path()
    assert path.parent == fresh_cache and path.exists()
    assert first.loky_start[0] > 0 and first.process_task_seconds > 0
    assert first.pipe_bytes_per_second > 1e6 and first.worker_memory_bytes > 1 << 20
    assert first.process_start_seconds("loky", 2) >= first.loky_start[0]
    calibrate._cached.cache_clear()
    assert calibrate.get_calibration() == first  # read back, not measured again


def test_corrupt_cache_is_measured_again(
    fresh_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = calibrate.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"loky_start": "fast"}))
    calibration = calibrate.get_calibration()
    assert calibration.process_task_seconds > 0
    assert "unreadable calibration cache" in caplog.text
    assert json.loads(path.read_text())["process_task_seconds"] > 0


def test_processes_started_together_on_a_new_node_measure_it_once(tmp_path: Path) -> None:
    # Side by side, each measurement would slow the others'; one measures, the rest read it.
    code = textwrap.dedent(
        """
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        from amorsize_flows.measure.calibration import get_calibration
        print(get_calibration().fingerprint)
        """
    )
    env = dict(os.environ, **{calibrate.CACHE_DIR_ENV: str(tmp_path)})
    started = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    printed = [process.communicate(timeout=240)[0] for process in started]
    assert all(process.returncode == 0 for process in started), printed
    assert sum("Calibrated this machine" in text for text in printed) == 1, printed
    assert len({text.splitlines()[-1] for text in printed}) == 1
