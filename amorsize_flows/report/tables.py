"""A plan and its run record as a person reads them: a text table (logs, CLI) or markdown (UIs)."""

from __future__ import annotations

from ..data.plan import Plan, RunRecord

__all__ = ["plan_markdown", "plan_rows", "plan_table"]


def plan_rows(plan: Plan, record: RunRecord | None = None) -> list[tuple[str, str]]:
    """The facts worth showing, as (label, value) pairs, in reading order."""
    workers = "1 (the caller)" if plan.backend == "serial" else str(plan.n_jobs)
    backend = plan.backend + (f" ({plan.start_method})" if plan.start_method else "")
    rows = [
        ("function", plan.function or "?"),
        ("backend", backend),
        ("workers", workers),
        ("chunk size", str(plan.chunksize)),
        ("items", "unknown (an iterator)" if plan.n_items is None else str(plan.n_items)),
        ("plan from", _source(plan.source)),
        ("estimated speedup", f"{plan.estimated_speedup:.2f}x"),
    ]
    if record is not None:
        rows += [
            ("achieved speedup", f"{record.achieved_speedup:.2f}x"),
            ("wall time", f"{record.wall_seconds:.3f} s (dry run {record.sample_seconds:.3f} s)"),
            ("seconds per item", f"{record.seconds_per_item:.6f}"),
        ]
        if record.peak_memory_bytes:
            rows.append(("peak memory", f"{_mib(record.peak_memory_bytes)} a chunk, in a worker"))
    if plan.limits:
        limits = plan.limits
        text = (
            f"{limits.get('cpus')} CPUs ({limits.get('cpus_source')}), "
            f"{_gib(limits.get('memory_bytes'))} ({limits.get('memory_source')})"
        )
        if limits.get("upper_bound"):
            text += (
                "; at most: cgroup quotas not read, nor the memory free now, the map being "
                "serial under any"
            )
        rows.append(("limits", text))
    rows.append(("reason", plan.reason))
    return rows


def plan_table(plan: Plan, record: RunRecord | None = None) -> str:
    """A plain-text table for task logs and the terminal."""
    rows = plan_rows(plan, record)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def plan_markdown(plan: Plan, record: RunRecord | None = None, title: str | None = None) -> str:
    """A markdown summary for the Prefect and Airflow UIs."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| | |", "|---|---|"]
    lines += [
        f"| {label} | {value.replace('|', '/')} |" for label, value in plan_rows(plan, record)
    ]
    return "\n".join(lines) + "\n"


def _source(source: str) -> str:
    return {
        "sampled": "a dry run on this worker",
        "history": "the previous run's record (dry run skipped)",
        "stored": "a stored plan",
        "fixed": "settings chosen by hand",
    }.get(source, source)


def _mib(value: float) -> str:
    return f"{value / (1 << 20):.1f} MiB"


def _gib(value: object) -> str:
    return f"{value / (1 << 30):.1f} GiB" if isinstance(value, (int, float)) else "?"
