"""What deciding costs when a scheduled run starts from evidence instead of a dry run.

Measures, in a fresh process, the time from calling ``imap`` to having a plan (no item computed
yet) for: a stored plan (``plan=``), a previous run's record (``history=``), a cold dry run, and
a serial run's record in a threaded caller, whose plan starts fresh loky interpreters.
The bar: with a stored plan or a fitting record the decision takes under 5 ms.

Run: ``python -m benchmarks.decision_cost`` (writes ``benchmarks/results/decision_cost.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
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

    def decide(options: dict[str, object]) -> tuple[float, str | None]:
        started = time.perf_counter()
        iterator = amz.imap(busy, items, **options)
        seconds = time.perf_counter() - started
        iterator.close()
        return seconds, iterator.plan.start_method

    first = amz.run(busy, items)  # the "previous scheduled run"
    stored = amz.Plan.from_dict(first.plan.to_dict())
    record = amz.RunRecord.from_dict(first.record.to_dict())
    cases: dict[str, dict[str, object]] = {
        "stored plan": {"plan": stored},
        "previous run's record": {"history": record},
        "dry run": {},
    }
    timings: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(repeat):
        for label, options in cases.items():
            timings[label].append(decide(options)[0])

    # Beside a thread (Prefect's engine, Airflow's), processes are fresh loky interpreters that
    # load the function first. A serial run's record does not show what that costs, so it is
    # looked up: measured once per function and machine (here, before the clock).
    serial_record = amz.run(busy, items[:6]).record
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        options = {"history": serial_record}
        if decide(options)[1] != "loky":
            raise RuntimeError("the threaded case did not plan loky workers: it measures nothing")
        label = "a serial run's record, threaded caller (loky)"
        timings[label] = [decide(options)[0] for _ in range(repeat)]
    finally:
        stop.set()
        helper.join()
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
