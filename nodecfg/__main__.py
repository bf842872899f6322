from nodecfg.cli import main

raise SystemExit(main())
