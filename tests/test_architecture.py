"""The arrows and size rules of ARCHITECTURE.md §2, read off the source: every import, at
module level or inside a function, is an edge."""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zoo", "inference_comparisons")
#: Longest function allowed without a comment saying why (ARCHITECTURE.md §2).
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def _sources() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The deepest module of the project that ``name`` (a module or a module's attribute) is in."""
    modules = _sources()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from a.b import c`` is an edge to the
    module ``a.b.c`` when it is one, else to ``a.b``)."""
    graph = {}
    for module, path in _sources().items():
        edges = set()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            edges |= {target for name in names if (target := _resolve(name)) and target != module}
        graph[module] = edges
    return graph


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in _graph()[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_import_graph_is_read():
    graph = _graph()
    assert "zoo.gmm" in graph and "zoo.base" in graph["zoo.gmm"]
    assert "inference_comparisons.estimators.potential" in graph["inference_comparisons.methods.mcmc"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    cycles = sorted(module for module in _graph() if module.startswith(package) and module in _reachable(module))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_zoo_never_imports_the_harness():
    for module in _graph():
        if module.startswith("zoo"):
            assert not {m for m in _reachable(module) if m.startswith("inference_comparisons")}, module


@pytest.mark.parametrize("layer", ["inference_comparisons.estimators", "inference_comparisons.references"])
def test_estimators_and_reference_builders_never_import_the_methods(layer):
    for module in _graph():
        if module.startswith(layer):
            methods = {m for m in _reachable(module) if m.startswith("inference_comparisons.methods")}
            assert not methods, f"{module} reaches {methods}"


def test_the_row_schema_is_below_the_sweep_and_the_report():
    assert not {m for m in _reachable("inference_comparisons.schema") if m.startswith("inference_comparisons")}


def test_functions_are_short_or_say_why():
    long = []
    for module, path in _sources().items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = lines[node.lineno - 1:node.end_lineno]
                if len(body) > MAX_FUNCTION_LINES and not any("# long function because" in line for line in body):
                    long.append(f"{module}.{node.name} ({len(body)} lines)")
    assert not long, long


def test_the_code_cites_its_own_architecture_not_an_outside_file():
    for path in _sources().values():
        assert "DESIGN.md" not in path.read_text(), path


def _room(module: str) -> str:
    """``zoo`` for the zoo, else the harness's sub-package or module (``sweep``, ``base``)."""
    parts = module.split(".")
    return "zoo" if parts[0] == "zoo" else parts[1] if len(parts) > 1 else ""


def test_architecture_md_states_the_harness_imports_exactly():
    """ARCHITECTURE.md §2's table of which room imports which is the code's, edge for edge
    (the package's own ``__init__``, ``__main__`` and the ArviZ import shim aside)."""
    block = re.search(r'```text title="imports"\n(.*?)\n```', (ROOT / "ARCHITECTURE.md").read_text(), flags=re.S)
    assert block, "ARCHITECTURE.md has no imports table"
    documented = {}
    for line in block.group(1).splitlines():
        room, _, targets = line.partition("->")
        documented[room.strip()] = {t.strip() for t in targets.split(",") if t.strip()}
    actual: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        if module.startswith("inference_comparisons"):
            room = _room(module)
            actual.setdefault(room, set()).update(
                _room(target) for target in targets if _room(target) != room)
    ignored = {"", "__main__", "_arviz"}
    actual = {room: targets - ignored for room, targets in actual.items() if room not in ignored}
    assert actual == documented
