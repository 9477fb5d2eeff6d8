"""Package exports imported on first use (PEP 562), so importing a package's light parts
(its plugin descriptor, for ``mlvigil --help``) does not import its heavy modules.

>>> __getattr__ = lazy_exports("json", {"dumps": "json"})
>>> __getattr__("dumps")([1])
'[1]'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module)
    when ``name`` is first read; list the same names under ``if TYPE_CHECKING:`` for mypy."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
