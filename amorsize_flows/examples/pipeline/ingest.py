"""Ingestion: batch files land in a folder; each run loads only the new ones, checked and
deduplicated, into the pipeline's store (one Parquet file).

The data is scikit-learn's handwritten digits (1,797 8x8 images, no download), dealt into daily
batches reproducibly: each batch repeats a few rows of the one before, as re-sent exports do.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from sklearn.datasets import load_digits

__all__ = [
    "PIXELS",
    "BatchValidationError",
    "load_new_batches",
    "read_store",
    "write_day",
]

PIXELS = [f"p{index}" for index in range(64)]
DAYS = 6  # the digits dealt into this many daily batches
REPEATED_ROWS = 12  # rows of the previous batch each batch sends again
STORE = "store.parquet"
LOADED = "loaded.json"

BATCH_SCHEMA = pa.DataFrameSchema(
    {
        **{name: pa.Column(float, pa.Check.in_range(0.0, 16.0), coerce=True) for name in PIXELS},
        "label": pa.Column(int, pa.Check.isin(list(range(10))), coerce=True),
    },
    strict=True,
)


class BatchValidationError(ValueError):
    """A batch file failed its checks; ``report`` names each failing row and check."""

    def __init__(self, path: Path, report: list[dict[str, Any]]) -> None:
        rows = sorted({entry["row"] for entry in report if entry["row"] is not None})
        super().__init__(
            f"{path.name} failed validation in {len(report)} check(s) on rows {rows[:20]}: "
            f"{report[:5]}; fix or remove the file and run again (nothing of it was loaded)"
        )
        self.path, self.report = path, report


def write_day(landing: Path, day: int, *, fmt: str | None = None, shift: float = 0.0) -> Path:
    """Write day ``day``'s batch (0 to DAYS - 1) into ``landing``: CSV on even days, Parquet on
    odd ones unless ``fmt`` says; ``shift`` brightens every pixel, to inject drift."""
    if not 0 <= day < DAYS:
        raise ValueError(f"`day` must be between 0 and {DAYS - 1}, got {day!r}")
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    bounds = np.linspace(0, len(order), DAYS + 1).astype(int)
    rows = order[max(0, bounds[day] - (REPEATED_ROWS if day else 0)) : bounds[day + 1]]
    frame = pd.DataFrame(np.clip(digits.data[rows] + shift, 0, 16), columns=PIXELS)
    frame["label"] = digits.target[rows]
    fmt = fmt or ("csv" if day % 2 == 0 else "parquet")
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / f"digits-day{day:02d}.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"`fmt` must be 'csv' or 'parquet', got {fmt!r}")
    return path


def load_new_batches(landing: str | Path, store_dir: str | Path) -> dict[str, Any]:
    """Load the batch files of ``landing`` not loaded before into the store of ``store_dir``.

    Every new file is checked first: one bad file fails the run and loads nothing. Rows seen
    before (by content) are dropped. Returns what was loaded, for the next stages and the log.

    Raises:
        BatchValidationError: a file failed the schema or quality checks (the report names rows).
    """
    landing, store_dir = Path(landing), Path(store_dir)
    if not landing.is_dir():
        raise FileNotFoundError(f"no landing folder {landing}: write the batch files there")
    store_dir.mkdir(parents=True, exist_ok=True)
    loaded = _loaded(store_dir)
    new_files = sorted(
        path
        for path in landing.iterdir()
        if path.suffix in (".csv", ".parquet") and path.name not in loaded
    )
    frames = [_checked(path) for path in new_files]
    store = read_store(store_dir)
    seen = set(store["row_id"]) if len(store) else set()
    received = sum(len(frame) for frame in frames)
    fresh = pd.concat(frames, ignore_index=True) if frames else store.iloc[:0]
    if len(fresh):
        fresh = fresh.assign(row_id=_row_ids(fresh)).drop_duplicates("row_id")
        fresh = fresh[~fresh["row_id"].isin(seen)]
        run = int(store["batch"].max()) + 1 if len(store) else 0
        fresh = fresh.assign(batch=run)  # which load brought the row: the drift reference
        pd.concat([store, fresh], ignore_index=True).to_parquet(store_dir / STORE, index=False)
    (store_dir / LOADED).write_text(json.dumps(sorted(loaded | {p.name for p in new_files})))
    return {
        "files": [path.name for path in new_files],
        "rows_received": received,
        "duplicates_dropped": received - len(fresh),
        "new_row_ids": fresh["row_id"].tolist() if len(fresh) else [],
        "rows_in_store": len(store) + len(fresh),
    }


def read_store(store_dir: str | Path) -> pd.DataFrame:
    """Every row loaded so far (pixels, label, row_id, batch); empty before the first load."""
    path = Path(store_dir) / STORE
    if not path.exists():
        return pd.DataFrame(columns=[*PIXELS, "label", "row_id", "batch"])
    return pd.read_parquet(path)


def _checked(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    try:
        return BATCH_SCHEMA.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        report = [
            {
                "row": None if pd.isna(case["index"]) else int(case["index"]),
                "column": case["column"],
                "check": str(case["check"]),
                "value": None if pd.isna(case["failure_case"]) else str(case["failure_case"]),
            }
            for case in cases.to_dict("records")
        ]
        raise BatchValidationError(path, report) from None


def _row_ids(frame: pd.DataFrame) -> list[str]:
    """A row's identity is its content: a re-sent row is the same row."""
    values = frame[[*PIXELS, "label"]].to_numpy(dtype=float)
    return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in values]


def _loaded(store_dir: Path) -> set[str]:
    path = store_dir / LOADED
    return set(json.loads(path.read_text())) if path.exists() else set()
