import sys

from mlvigil.app.cli import main

# Guarded: worker processes started with "spawn" (drift calibrations) import this module again.
if __name__ == "__main__":
    sys.exit(main())
