import sys

from mlvigil.cli import main

sys.exit(main())
