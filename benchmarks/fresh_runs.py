"""Run (a, b) pairs of a benchmark module, each in a fresh process, shuffled round by round."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["parse_rounds", "run_pairs"]


def parse_rounds(
    description: str,
    argv: Sequence[str] | None,
    *,
    default: int,
    names: tuple[str, str],
    run_one: Callable[[str, str], Any],
) -> int | None:
    """The ``--rounds`` asked for; or, in a child started by :func:`run_pairs` (``--one A B``),
    None once ``run_one(A, B)`` is printed as JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--rounds", type=int, default=default, help=f"runs of each pair (default {default})"
    )
    parser.add_argument("--one", nargs=2, metavar=names, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return None
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return int(args.rounds)


def run_pairs(
    module: str, pairs: Sequence[tuple[str, str]], rounds: int, *, verbose: bool = False
) -> dict[tuple[str, str], list[Any]]:
    """What ``python -m MODULE --one A B`` printed last (JSON), for each pair, ``rounds`` times.

    Every round runs every pair once, in an order shuffled anew (seeded), so that the host's drift
    hits all of them alike.
    """
    outputs: dict[tuple[str, str], list[Any]] = {pair: [] for pair in pairs}
    order, shuffled = random.Random(0), list(pairs)
    for round_number in range(rounds):
        order.shuffle(shuffled)
        for first, second in shuffled:
            command = [sys.executable, "-m", module, "--one", first, second]
            printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            outputs[first, second].append(json.loads(printed.strip().splitlines()[-1]))
        if verbose:
            print(f"round {round_number + 1}/{rounds} done", flush=True)
    return outputs
