"""The command line every round-based benchmark shares: how many rounds, where its report goes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

__all__ = ["DEFAULT_OUTPUT", "run_benchmark"]

DEFAULT_OUTPUT = Path("benchmarks") / "results"


def run_benchmark(
    doc: str,
    report_name: str,
    measure: Callable[[int], str],
    *,
    rounds: int,
    least: int = 1,
    option: str = "--rounds",
    argv: list[str] | None = None,
) -> int:
    """Parse ``option`` (at least ``least``, default ``rounds``) and ``--output``, run
    ``measure(rounds)`` for its markdown report, write it to ``<output>/<report_name>`` and print it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(option, dest="rounds", type=int, default=rounds)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.rounds < least:
        parser.error(f"{option} must be at least {least}, got {args.rounds}")
    report = measure(args.rounds)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / report_name).write_text(report)
    print(report)
    return 0
