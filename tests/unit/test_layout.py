"""The package's layout: wings by stage family whose imports point one way, no circle, no module over 400 lines.

common <- data <- backbone <- method <- evaluation: a module may import from its own wing and the wings
before it; the command line (ltaug/*.py) sits above them all. Every import counts, also one inside a
function or under TYPE_CHECKING: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ltaug"
WINGS = ("common", "data", "backbone", "method", "evaluation")  # each may import the ones before it
TOP = len(WINGS)  # ltaug/*.py: the command line
MAX_LINES = 400


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from every import statement of every module."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def wing(module: str) -> int:
    """The rank of ``module``'s wing: 0 for common .. 4 for evaluation; TOP for the command line and the package."""
    parts = module.split(".")
    return WINGS.index(parts[1]) if len(parts) > 1 and parts[1] in WINGS else TOP


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a wing after its own, as 'importer -> imported'."""
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if wing(d) > wing(m))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_checks_find_an_upward_import_and_a_circle():
    graph = {
        "ltaug.common.io": {"ltaug.data.manifest"},  # upward: common may not import data
        "ltaug.data.manifest": {"ltaug.common.io", "ltaug.data.labels"},
        "ltaug.data.labels": {"ltaug.data.manifest"},  # a circle inside one wing
        "ltaug.evaluation.report": {"ltaug.method.fusion"},  # downward: allowed
        "ltaug.method.fusion": set(),
        "ltaug.cli": {"ltaug.evaluation.report"},
    }
    assert upward_imports(graph) == ["ltaug.common.io -> ltaug.data.manifest"]
    assert circles(graph) == [["ltaug.common.io", "ltaug.data.labels", "ltaug.data.manifest"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_package_imports(tmp_path):
    package = tmp_path / "ltaug"
    (package / "common").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "common" / "__init__.py").write_text("")
    (package / "common" / "io.py").write_text("def f():\n    from ltaug.common import shards\n")
    (package / "common" / "shards.py").write_text("import ltaug.common.io\n")
    graph = import_graph(package)
    assert graph["ltaug.common.io"] == {"ltaug.common", "ltaug.common.shards"}
    assert graph["ltaug.common.shards"] == {"ltaug.common.io"}
    assert circles(graph) == [["ltaug.common.io", "ltaug.common.shards"]]


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE)


def test_every_module_sits_in_a_wing_or_on_top(graph):
    loose = [m for m in graph if wing(m) == TOP and m.count(".") > 1]
    assert loose == [], f"modules outside the wings {WINGS}: {loose}"
    assert {m.split(".")[1] for m in graph if m.count(".") >= 1} >= set(WINGS)


def test_imports_point_one_way(graph):
    assert upward_imports(graph) == [], "a wing imports from a wing after it (common <- data <- backbone <- method <- evaluation)"


def test_no_import_circle(graph):
    assert circles(graph) == []


def test_every_module_under_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert long == {}, f"split these modules: {long}"
