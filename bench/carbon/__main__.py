from bench.carbon.run import main

raise SystemExit(main())
