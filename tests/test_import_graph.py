"""No two modules import each other, directly or round a loop (import-linter checks the layers).

A cycle hidden in a function-level import counts: it runs. One under ``if TYPE_CHECKING:``
does not: it never runs, and it is how an annotation names a type of a module above.
"""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import (
    PACKAGES,
    PRODUCER_PACKAGES,
    PRODUCER_SRC,
    REPO,
    cycles,
    import_graph,
    module_files,
)


def _tree(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(module_files(root, ["pkg"]))


def test_no_module_cycles() -> None:
    modules = {**module_files(REPO, PACKAGES), **module_files(REPO / PRODUCER_SRC, PRODUCER_PACKAGES)}
    assert len(modules) > 100, "the server's packages were not found"
    found = cycles(import_graph(modules))
    assert found == [], (
        "modules that import each other (break the loop; docs/architecture.md):\n"
        + "\n".join(" <-> ".join(c) for c in found)
    )


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    graph = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import B\n",
            "pkg/b.py": "B = 1\ndef late():\n    from pkg import c\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    assert graph["pkg.b"] == {"pkg.c"}, "from pkg import c names the module pkg.c"
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_relative_and_type_checking_imports(tmp_path: Path) -> None:
    graph = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\n",
            "pkg/a.py": "from typing import TYPE_CHECKING\nA = 1\nif TYPE_CHECKING:\n    from pkg.b import B\n",
            "pkg/b.py": "from . import a\nB = 2\n",
        },
    )
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": set(), "pkg.b": {"pkg.a"}}
    assert cycles(graph) == []
