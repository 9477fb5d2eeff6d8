"""Exit codes of ``mlvigil drift`` (documented in docs/drift.md and ``--help``).

Their own module: the parser (``detectors.drift.cli``) and the file readers that fail with them
(``detectors.drift.files``) both import them, and neither imports the other at import time.
3-5 are never "no drift".
"""

EXIT_NO_DRIFT = 0
EXIT_DRIFT = 1
EXIT_USAGE = 2
EXIT_SCHEMA = 3
EXIT_TOO_FEW_ROWS = 4
EXIT_UNREADABLE = 5
