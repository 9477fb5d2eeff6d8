"""Exit codes of ``mlvigil agent`` (sysexits.h): nothing to sample here, or not allowed to.

Their own module: the parser (``gpu_health.cli``) and the agent (``gpu_health.agent``) both
use them, and the agent must not import the parser that imports it.
"""

EXIT_UNAVAILABLE = 69
EXIT_NOPERM = 77
EXIT_USAGE = 2
