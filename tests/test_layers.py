"""The package's layers: each imports only those below it, the model no executor, no module is
over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "amorsize_flows"
# Lowest first. A module of a layer may import its own layer and those listed before it.
LAYERS = ("data", "probes", "measure", "decide", "execution", "report", "", "integrations")
INTEGRATIONS = ("airflow", "prefect", "examples")
# What runs workers: the model must reach none of it, however indirectly.
EXECUTORS = ("loky", "concurrent.futures", "multiprocessing.pool", "amorsize_flows.execution")
MAX_MODULE_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    """The layer of ``amorsize_flows.<sub>...``: its subpackage, "" for the top modules."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("api", "cli", "__main__"):
        return ""
    if parts[1] in INTEGRATIONS:
        return "integrations"
    return parts[1] if parts[1] in LAYERS else ""


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code, relative ones made absolute."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _run_time_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from . import x` may name a submodule.
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def _run_time_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:``, which never run."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return nodes


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_every_import_within_the_package_runs_downward() -> None:
    modules = _modules()
    upward = []
    for name, path in modules.items():
        own = LAYERS.index(_layer(name))
        for target in _imports(path):
            if target in modules and LAYERS.index(_layer(target)) > own:
                upward.append(f"{name} ({_layer(name) or 'top'}) imports {target}")
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(upward))


def test_the_model_reaches_no_executor() -> None:
    modules = _modules()
    reached, todo = set(), ["amorsize_flows.decide.model"]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += [target for target in _imports(modules[name]) if target in modules]
        executors = [
            target
            for target in _imports(modules[name])
            if any(target == e or target.startswith(e + ".") for e in EXECUTORS)
        ]
        assert not executors, f"{name}, imported by the model, imports {executors}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: path.name)
def test_no_module_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


def test_the_walk_resolves_relative_imports() -> None:
    # The walk must resolve relative imports, or every check above would pass vacuously.
    found = _imports(PACKAGE / "decide" / "prepare.py")
    assert "amorsize_flows.measure.dry_run" in found
    assert "amorsize_flows.probes.blas_pools" in found
