"""Now as UTC, the one definition: naive UTC, as the pure core and the status fields compare it.

The core never reads the clock (it takes ``now``); the adapters and the
controller that hand it ``now`` all read it here.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time in UTC, without tzinfo (the core's times are all naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)
