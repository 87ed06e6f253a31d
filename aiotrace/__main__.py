"""``python -m aiotrace``: the aiotrace command line."""

from ._cli import main

raise SystemExit(main())
