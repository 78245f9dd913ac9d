"""docs/decisions.md names every numeric constant of the core, and has every section the code
points at."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DECISIONS = ROOT / "docs" / "decisions.md"
CORE = [
    path
    for path in (ROOT / "amorsize_flows").rglob("*.py")
    if not {"airflow", "prefect", "examples"} & set(path.parts)
]
_ANCHOR = re.compile(r"docs/decisions\.md#([a-z0-9-]+)")


def _numeric_constants(path: Path) -> list[str]:
    """Module-level UPPER_CASE names bound to a number (or arithmetic on numbers)."""
    names = []
    for node in ast.parse(path.read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if not isinstance(target, ast.Name) or not target.id.lstrip("_").isupper():
            continue
        numbers = isinstance(value, ast.Constant) and type(value.value) in (int, float)
        if numbers or isinstance(value, ast.BinOp):
            names.append(target.id)
    return names


def _slug(heading: str) -> str:
    """The anchor a markdown renderer gives a heading, as GitHub does."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_numeric_constant_of_the_core_is_named_in_decisions() -> None:
    text = DECISIONS.read_text()
    missing = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in CORE
        for name in _numeric_constants(path)
        if f"`{name}`" not in text
    ]
    assert not missing, "constants docs/decisions.md does not name:\n" + "\n".join(missing)


def test_every_anchor_the_code_points_at_exists() -> None:
    headings = {
        _slug(line[3:]) for line in DECISIONS.read_text().splitlines() if line.startswith("## ")
    }
    pointed = {
        (path.relative_to(ROOT), anchor)
        for path in [*CORE, *(ROOT / "benchmarks").glob("*.py")]
        for anchor in _ANCHOR.findall(path.read_text())
    }
    broken = sorted(f"{path}: #{anchor}" for path, anchor in pointed if anchor not in headings)
    assert not broken, "anchors with no section in docs/decisions.md:\n" + "\n".join(broken)


def test_the_constant_finder_sees_the_constants() -> None:
    # Guards the two tests above against passing because they found nothing to check.
    found = {name for path in CORE for name in _numeric_constants(path)}
    assert {"MIN_GAIN", "SAMPLE_FRACTION", "BYTES_PER_WORKER", "CGROUP_V1_UNLIMITED"} <= found
