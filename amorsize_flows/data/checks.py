"""Argument checks shared by every entry point: a failure names the argument, what was expected
and what was got."""

from __future__ import annotations

import re

__all__ = ["BACKENDS", "check_backend", "check_positive_int", "parse_memory"]

BACKENDS: tuple[str, ...] = ("serial", "threads", "processes")

_MEMORY_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MEMORY_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def check_positive_int(name: str, value: object, *, optional: bool = False) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (or None, where ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        alternative = " or None" if optional else ""
        raise ValueError(f"`{name}` must be an int >= 1{alternative}, got {value!r}")


def check_backend(backend: object, *, optional: bool = False) -> None:
    """Raise ValueError unless ``backend`` names a backend (or is None, where ``optional``)."""
    if optional and backend is None:
        return
    if backend not in BACKENDS:
        alternative = " or None" if optional else ""
        raise ValueError(
            f"`backend` must be one of {', '.join(BACKENDS)}{alternative}, got {backend!r}"
        )


def parse_memory(value: str | int) -> int:
    """Parse a byte count such as ``1073741824``, ``"512M"``, ``"4G"`` or ``"1.5GiB"``.

    Raises:
        TypeError: when the value is neither an int nor a string.
        ValueError: when the value is not a positive size.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"a memory size must be an int or a string like '4G', got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY_PATTERN.match(value)
        if match is None:
            raise ValueError(
                f"a memory size must be bytes or a number with K, M, G or T (like '512M'), "
                f"got {value!r}"
            )
        size = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()])
    if size <= 0:
        raise ValueError(f"a memory size must be positive, got {value!r}")
    return size
