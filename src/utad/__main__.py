from utad.cli import main

raise SystemExit(main())
