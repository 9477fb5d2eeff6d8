import sys

from bench.performance_estimation.run import main

sys.exit(main())
