from digitpairs.cli.main import main

raise SystemExit(main())
