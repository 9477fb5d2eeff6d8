"""``python -m dashboards [--out DIR] [--check]``: the same as ``mlvigil dashboards``."""

from __future__ import annotations

import sys

from dashboards.cli import main

if __name__ == "__main__":
    sys.exit(main())
