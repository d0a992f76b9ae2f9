"""routerd's command line (completed by the routerd issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("routerd: the daemon is not built yet (issue 3)", file=sys.stderr)
    return 1
