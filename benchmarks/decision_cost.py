"""What deciding costs when a scheduled run starts from evidence instead of a dry run.

Measures, in a fresh process, the time from calling ``imap`` to having a plan (no item computed
yet) for: a stored plan (``plan=``), a previous run's record (``history=``), and a cold dry run.
The bar: with a stored plan or a fitting record the decision takes under 5 ms.

Run: ``python -m benchmarks.decision_cost`` (writes ``benchmarks/results/decision_cost.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "decision_cost.md"
BAR_SECONDS = 0.005


def busy(seconds: float) -> float:
    """Burn ``seconds`` of CPU in Python: the mapped function."""
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass
    return seconds


def _child(repeat: int) -> dict[str, list[float]]:
    import amorsize_flows as amz

    items = [0.005] * 400
    first = amz.run(busy, items)  # the "previous scheduled run"
    stored = amz.Plan.from_dict(first.plan.to_dict())
    record = amz.RunRecord.from_dict(first.record.to_dict())
    timings: dict[str, list[float]] = {
        "stored plan": [],
        "previous run's record": [],
        "dry run": [],
    }
    for _ in range(repeat):
        for label, options in (
            ("stored plan", {"plan": stored}),
            ("previous run's record", {"history": record}),
            ("dry run", {}),
        ):
            started = time.perf_counter()
            iterator = amz.imap(busy, items, **options)
            timings[label].append(time.perf_counter() - started)
            iterator.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.repeat)))
        return
    command = [
        sys.executable,
        "-m",
        "benchmarks.decision_cost",
        "--child",
        "--repeat",
        str(args.repeat),
    ]
    timings = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    lines = [
        "# Decision cost",
        "",
        f"Median seconds from `imap()` to a plan, {args.repeat} repeats in one fresh process "
        "(5 ms CPU-bound function, 400 items). Bar: under 5 ms with a stored plan or record.",
        "",
        "| starting from | median ms | max ms | under 5 ms |",
        "|---|---|---|---|",
    ]
    for label, values in timings.items():
        median = statistics.median(values)
        verdict = "n/a" if label == "dry run" else ("yes" if median < BAR_SECONDS else "NO")
        lines.append(f"| {label} | {median * 1e3:.2f} | {max(values) * 1e3:.2f} | {verdict} |")
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
