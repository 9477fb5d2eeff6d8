import sys

from bench.drift.run import main

sys.exit(main())
