from bench.training.run import main

raise SystemExit(main())
