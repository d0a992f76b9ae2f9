"""Leader election on a coordination.k8s.io Lease, as a pure decision.

The adapter reads the Lease, asks :func:`decide`, and writes what it returns
with the Lease's resourceVersion, so two replicas racing for it cannot both
win (the loser gets a 409 and stays a follower).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that election uses."""

    holder: str | None
    acquired: datetime | None
    renewed: datetime | None
    duration: timedelta
    transitions: int = 0


@dataclass(frozen=True)
class Decision:
    leader: bool
    write: LeaseRecord | None
    """What to write (None: leave the Lease alone)."""
    retry_at: datetime
    """When to look again."""


def decide(
    record: LeaseRecord | None, me: str, now: datetime, duration: timedelta, retry: timedelta
) -> Decision:
    """Acquire, renew, take over an expired lease, or follow."""
    if record is None or record.holder is None:
        return Decision(True, LeaseRecord(me, now, now, duration, 0 if record is None else record.transitions + 1),
                        now + retry)  # fmt: skip
    if record.holder == me:
        return Decision(True, replace(record, renewed=now, duration=duration), now + retry)
    renewed = record.renewed or record.acquired
    if renewed is None or now >= renewed + record.duration:
        return Decision(True, LeaseRecord(me, now, now, duration, record.transitions + 1), now + retry)
    return Decision(False, None, min(renewed + record.duration, now + retry))


def release(record: LeaseRecord, me: str) -> LeaseRecord | None:
    """On a clean stop the leader hands the Lease back so a follower need not wait for it to expire."""
    if record.holder != me:
        return None
    return replace(record, holder=None, renewed=None)
