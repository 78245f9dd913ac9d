"""The command line: ``python -m amorsize_flows limits | plan | calibrate``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .api import optimize
from .data.checks import BACKENDS
from .measure.calibration import cache_path, get_calibration
from .measure.limits import worker_limits
from .report.tables import plan_table

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.command(args) or 0)
    except (ValueError, TypeError, ImportError, AttributeError, OSError) as error:
        print(f"amorsize: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m amorsize_flows",
        description="Measure a function and plan its parallel map inside this worker's limits.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    limits = commands.add_parser("limits", help="print the CPUs and memory this worker may use")
    limits.add_argument("--json", action="store_true", help="print JSON instead of a table")
    limits.set_defaults(command=_limits)

    plan = commands.add_parser(
        "plan",
        help="profile MODULE:FUNC on items and print the plan",
        description="Profile MODULE:FUNC on the given items (a dry run: it calls the function) "
        "and print the plan. Items: --items JSON, --items-file FILE.json or --range N.",
    )
    plan.add_argument("function", metavar="MODULE:FUNC", help="an importable function of one item")
    source = plan.add_mutually_exclusive_group(required=True)
    source.add_argument("--items", type=json.loads, help="a JSON list, e.g. '[1, 2, 3]'")
    source.add_argument("--items-file", type=Path, help="a file holding a JSON list")
    source.add_argument("--range", type=int, metavar="N", help="the integers 0 .. N-1")
    plan.add_argument("--max-workers", type=int)
    plan.add_argument("--memory-limit", help="bytes, or a size like 4G")
    plan.add_argument("--backend", choices=BACKENDS)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(command=_plan)

    calibrate = commands.add_parser("calibrate", help="print this machine's measured costs")
    calibrate.add_argument("--force", action="store_true", help="measure again")
    calibrate.set_defaults(command=_calibrate)
    return parser


def _limits(args: argparse.Namespace) -> None:
    limits = worker_limits()
    if args.json:
        print(json.dumps(limits.to_dict(), indent=2))
        return
    print(f"cpus     {limits.cpus}  ({limits.cpus_source})")
    print(f"memory   {limits.memory_bytes / (1 << 30):.2f} GiB  ({limits.memory_source})")
    print(f"daemonic {limits.daemonic}")


def _plan(args: argparse.Namespace) -> None:
    func = _import_function(args.function)
    if args.range is not None:
        items: Any = range(args.range)
    elif args.items_file is not None:
        items = json.loads(args.items_file.read_text())
    else:
        items = args.items
    if not isinstance(items, (list, range)):
        raise TypeError(f"items must be a JSON list, got {type(items).__name__}")
    plan = optimize(
        func,
        items,
        max_workers=args.max_workers,
        memory_limit=args.memory_limit,
        backend=args.backend,
    )
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan_table(plan))


def _calibrate(args: argparse.Namespace) -> None:
    path = cache_path()
    if args.force:
        path.unlink(missing_ok=True)
    calibration = get_calibration()
    print(json.dumps(calibration.to_dict(), indent=2))
    print(f"cached at {path}", file=sys.stderr)


def _import_function(spec: str) -> Callable[[Any], Any]:
    module_name, _, qualname = spec.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"the function must be given as MODULE:FUNC, got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target
