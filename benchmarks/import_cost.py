"""What loading the public names costs a fresh process, against the standard library they need.

``import amorsize_flows; amorsize_flows.execute`` runs in a fresh interpreter, timed inside it
from before the import to after the attribute, and so does the import of the standard-library
modules the package cannot do without (dataclasses, logging, typing, hashlib, pickle, json,
threading): the floor no rearrangement of the package lowers. Both run alternately, round by
round; the report gives medians and quartiles.

Usage (from the repository root, bytecode compiled: ``python -m compileall -q amorsize_flows``)::

    python -m benchmarks.import_cost                 # 30 rounds, about 10 s
    python -m benchmarks.import_cost --rounds 60 --output DIR
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from .command_line import run_benchmark

__all__ = ["main"]

DEFAULT_ROUNDS = 30
# The bar for the public names, in milliseconds (median of fresh processes).
BAR_MS = 60.0

WAYS = {
    "amorsize_flows.execute": "import amorsize_flows; amorsize_flows.execute",
    "stdlib floor": "import dataclasses, logging, typing, hashlib, pickle, json, threading",
}
_TIMED = "import time; t = time.perf_counter(); {code}; print((time.perf_counter() - t) * 1e3)"


def _once(code: str) -> float:
    command = [sys.executable, "-c", _TIMED.format(code=code)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def _report(times: dict[str, list[float]], rounds: int) -> str:
    lines = [
        "# Import cost of the public names",
        "",
        f"`python -m benchmarks.import_cost --rounds {rounds}`: milliseconds from before the",
        "import to after the attribute, in a fresh interpreter, the two ways alternating.",
        "",
        "| what | median ms | quartiles ms |",
        "|---|---|---|",
    ]
    for name, values in times.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        lines.append(f"| `{name}` | {median:.1f} | {q1:.1f} to {q3:.1f} |")
    median = statistics.median(times["amorsize_flows.execute"])
    verdict = "holds" if median <= BAR_MS else "misses"
    lines += ["", f"The {BAR_MS:.0f} ms bar {verdict} (median {median:.1f} ms)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(
        __doc__, "import_cost.md", _measure, rounds=DEFAULT_ROUNDS, least=4, argv=argv
    )


def _measure(rounds: int) -> str:
    times: dict[str, list[float]] = {name: [] for name in WAYS}
    for _ in range(rounds):
        for name, code in WAYS.items():
            times[name].append(_once(code))
    return _report(times, rounds)


if __name__ == "__main__":
    sys.exit(main())
