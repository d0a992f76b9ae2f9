"""clusterd's command line (completed by the clusterd issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("clusterd: not built yet (issue 4)", file=sys.stderr)
    return 1
