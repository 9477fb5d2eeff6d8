"""The server's module import graph, read with ``ast`` (no imports run): figures and cycles.

``python -m tests.import_graph [CHECKOUT]`` prints the arrows between top-level packages and
layers, the module cycles, the number of modules and the largest modules and classes by lines.
tests/test_import_graph.py fails on any cycle between modules; import-linter (pyproject.toml)
checks the layers.

Imports under ``if TYPE_CHECKING:`` are left out: they never run, so they cannot make an
import-time cycle, and they are how an annotation names a type from a module that imports this
one. Imports inside functions are kept: they run, and a cycle hidden in a function is still one.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The server's packages (the producer distribution is its own tree: producer/src).
PACKAGES = ("mlvigil", "collector", "detectors", "gpu_health", "alerts", "retrain_hooks", "dashboards")
PRODUCER_SRC = Path("producer") / "src"
PRODUCER_PACKAGES = ("mlvigil_producer",)


def module_files(root: Path = REPO, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run, skipping ``if TYPE_CHECKING:`` bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` names or lies in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the known modules it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
    return sorted(found)


def group(module: str) -> str:
    """A module's package for the layer figures: ``mlvigil.core`` and ``mlvigil.app`` stand apart."""
    parts = module.split(".")
    if parts[0] == "mlvigil" and len(parts) > 1 and parts[1] in ("core", "app"):
        return ".".join(parts[:2])
    return parts[0]


def report(root: Path = REPO) -> str:
    modules = module_files(root)
    graph = import_graph(modules)
    top = Counter((a.split(".")[0], b.split(".")[0]) for a, bs in graph.items() for b in bs)
    lines = [f"modules: {len(modules)}", "", "arrows between top-level packages (module imports):"]
    lines += [f"  {a} -> {b}: {n}" for (a, b), n in sorted(top.items()) if a != b]
    pairs = {(a, b) for (a, b) in top if a != b}
    mutual = sorted({tuple(sorted(p)) for p in pairs if (p[1], p[0]) in pairs})
    lines.append(f"package pairs importing each other: {len(mutual)} {mutual}")
    layered = Counter((group(a), group(b)) for a, bs in graph.items() for b in bs)
    lines.append("arrows between packages, mlvigil.core and mlvigil.app apart:")
    lines += [f"  {a} -> {b}: {n}" for (a, b), n in sorted(layered.items()) if a != b]
    found = cycles(graph)
    lines.append(f"module cycles (strongly connected sets): {len(found)}")
    lines += [f"  {' <-> '.join(c)}" for c in found]
    sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in modules.items()), reverse=True)
    lines.append("largest 15 modules (lines):")
    lines += [f"  {n:5d} {m}" for n, m in sizes[:15]]
    classes = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.append((node.end_lineno - node.lineno + 1, f"{module}.{node.name}"))  # type: ignore[operator]
    lines.append("largest 10 classes (lines):")
    lines += [f"  {n:5d} {c}" for n, c in sorted(classes, reverse=True)[:10]]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tests.import_graph [CHECKOUT]
    print(report(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO))
