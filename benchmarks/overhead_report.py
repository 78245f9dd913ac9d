"""The table both orchestrator overhead benchmarks write: a wrapped stage against a hand-picked one."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path

BAR_SHARE, BAR_SECONDS = 0.05, 0.3


def write_report(
    path: Path,
    title: str,
    intro: str,
    shapes: Iterable[str],
    durations: dict[str, list[float]],
    names: tuple[str, str],
) -> str:
    """Write and return the markdown table; ``names`` formats the two stages' keys from a shape."""
    lines = [
        f"# {title}",
        "",
        f"{intro} Bar: at most {BAR_SHARE:.0%} or {BAR_SECONDS} s added.",
        "",
        "| shape | hand-picked first run | hand-picked later runs (median) | amorsize first run "
        "| amorsize later runs (median) | added, later runs | within bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        theirs = durations[names[0].format(shape)]
        ours = durations[names[1].format(shape)]
        hand = statistics.median(theirs[1:]) if len(theirs) > 1 else theirs[0]
        later = statistics.median(ours[1:]) if len(ours) > 1 else ours[0]
        added = later - hand
        ok = added <= max(BAR_SHARE * hand, BAR_SECONDS)
        lines.append(
            f"| {shape} | {theirs[0]:.3f} | {hand:.3f} | {ours[0]:.3f} | {later:.3f} | "
            f"{added:+.3f} s ({added / hand:+.0%}) | {'yes' if ok else 'NO'} |"
        )
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
