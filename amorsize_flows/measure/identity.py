"""A function's name and a digest of its code, stable across processes: how a run's record is
matched to the next run of the same stage."""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Callable
from typing import Any

__all__ = ["function_identity", "innermost", "short_name"]


def innermost(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function a ``functools.partial`` (of a partial...) calls in the end."""
    while isinstance(func, functools.partial):
        func = func.func
    return func


def short_name(func: Callable[..., Any]) -> str:
    """A callable's own name (``__name__``), through partials, for task names and logs."""
    target = innermost(func)
    return getattr(target, "__name__", None) or type(target).__name__


def function_identity(func: Callable[..., Any]) -> tuple[str, str]:
    """``module:qualname`` of a callable and a digest of its code, stable across processes.

    The digest changes when the function's code or constants change, so that a record of a
    previous run is not trusted for a function that has been edited since.
    """
    target: Any = func
    parts: list[bytes] = []
    while isinstance(target, functools.partial):
        parts.append(_stable_bytes((target.args, sorted(target.keywords.items()))))
        target = target.func
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    code = getattr(target, "__code__", None) or getattr(type(target).__call__, "__code__", None)
    if code is not None:
        parts.append(_code_bytes(code))
    parts.append(f"{module}:{name}".encode())
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return f"{module}:{name}", digest


def _code_bytes(code: Any) -> bytes:
    pieces = [code.co_code]
    for const in code.co_consts:
        pieces.append(_code_bytes(const) if hasattr(const, "co_code") else repr(const).encode())
    return b"\0".join(pieces)


def _stable_bytes(value: object) -> bytes:
    try:
        return pickle.dumps(value, protocol=4)
    except Exception:  # arguments that do not pickle are told apart by their type only
        return repr(type(value)).encode()
