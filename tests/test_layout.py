"""The layout reads as the pipeline: no import cycle between tnt's modules, and no module so long
that it holds more than one job."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tnt", "label_studio_backend")
MAX_MODULE_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules a module imports, at the top or inside a function: a lazy import (how
    heavy stages stay out of ``tnt --help``) still ties the two modules together. Only
    ``if TYPE_CHECKING:`` blocks, which never run, are left out."""
    targets: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from tnt.x import y` imports tnt.x.y when y is a submodule
                submodule = f"{node.module}.{alias.name}"
                targets.add(submodule if submodule in known else node.module)
    return targets & known


def _runtime_nodes(node: ast.AST):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            yield from (n for orelse in child.orelse for n in [orelse, *_runtime_nodes(orelse)])
            continue
        yield child
        yield from _runtime_nodes(child)


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported_modules(path, set(found)) - {name} for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_longer_than_one_job(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines; split it by what its parts do"


def test_the_corpus_knows_nothing_of_labels_or_taxonomies():
    graph = import_graph()
    reached = {name for name in graph if name.startswith("tnt.corpus")}
    frontier = set(reached)
    while frontier:  # everything the corpus imports, directly or through other modules
        frontier = set().union(*(graph[name] for name in frontier)) - reached
        reached |= frontier
    assert not {name for name in reached if name.startswith(("tnt.labels", "tnt.taxonomy"))}
