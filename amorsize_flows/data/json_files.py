"""JSON files written whole or not at all: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_json"]


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = None) -> Path:
    """Write ``data`` as JSON to ``path`` (parents created) through a temporary file renamed
    into place, and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(json.dumps(data, indent=indent) + "\n")
        os.replace(partial, target)  # atomic on POSIX and Windows alike
    finally:
        partial.unlink(missing_ok=True)
    return target
