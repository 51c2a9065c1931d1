from digitpairs.cli import main

raise SystemExit(main())
