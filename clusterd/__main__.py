"""``python -m clusterd`` is the ``clusterd`` command."""

from clusterd.cli import main

raise SystemExit(main())
