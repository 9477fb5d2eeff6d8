from bench.alerts.run import main

raise SystemExit(main())
