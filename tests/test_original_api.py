"""Code written for the original Amorsize runs with only its import line changed."""

from __future__ import annotations

from multiprocessing import Pool

import pytest

from amorsize_flows import execute, optimize, run
from tests.workloads import busy, square


def test_optimize_the_original_way_gives_what_its_guide_reads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The guide's quick start: optimize(func=..., data=..., verbose=True), then a Pool.
    data = [0.002] * 400
    result = optimize(func=busy, data=data, verbose=True)
    printed = capsys.readouterr().out
    assert isinstance(result.n_jobs, int) and result.n_jobs >= 1
    assert isinstance(result.chunksize, int) and result.chunksize >= 1
    assert result.estimated_speedup >= 1.0
    assert f"estimated speedup  {result.estimated_speedup:.2f}x" in printed
    assert "reason" in printed and result.reason in printed
    with Pool(processes=result.n_jobs) as pool:
        assert pool.map(square, range(20), chunksize=result.chunksize) == [x * x for x in range(20)]


def test_execute_the_original_way_returns_results_and_prints_what_it_achieved(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = execute(func=square, data=range(1000), verbose=True)
    assert results == [x * x for x in range(1000)]
    printed = capsys.readouterr().out
    assert "achieved speedup" in printed and "backend" in printed


def test_quiet_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(square, data=[1, 2, 3]).results == [1, 4, 9]
    assert optimize(square, [1, 2, 3]).n_jobs >= 1
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: execute(square, [1], data=[2]), "given twice"),
        (lambda: optimize(func=square), "missing the items"),
        (lambda: execute(square, [1], verbose="yes"), "`verbose` must be True or False"),
        (lambda: optimize(square, data="abc"), "`items` must be an iterable of items"),
    ],
)
def test_bad_original_calls_say_what_to_do(call, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call()
