"""``python -m bench.gpu``: see run.py."""

from bench.gpu.run import main

raise SystemExit(main())
