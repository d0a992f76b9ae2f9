"""Leader election on a coordination.k8s.io Lease, as pure decisions.

The times in a Lease come from whichever replica wrote it, and replicas' clocks
can be off by any amount, so they are never compared with this replica's clock
(client-go's leaderelection works the same way). A follower notes, on its own
monotonic clock, when it last saw the record change, and takes over only once
the record has stood still for the lease duration. The leader counts from when
it sent its last successful renewal and stops leading after the renew deadline,
which is shorter than the lease duration: by the time a follower may take over,
the old leader has stopped. What this tolerates is a difference in clock *rate*
up to leaseDuration / renewDeadline, not any difference in clock *offset*.

The adapter reads the Lease, feeds it to :func:`decide`, writes what it returns
with the Lease's resourceVersion (two replicas racing: the loser gets a 409),
reports a successful write with :func:`written`, and asks :func:`leading`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that election uses (times only for people reading it)."""

    holder: str | None
    acquired: datetime | None
    renewed: datetime | None
    duration: int
    """leaseDurationSeconds: how long followers wait on an unchanged record."""
    transitions: int = 0


@dataclass(frozen=True)
class Timing:
    """client-go's LeaseDuration, RenewDeadline and RetryPeriod, in seconds."""

    duration: int
    renew_deadline: float
    retry: float


@dataclass(frozen=True)
class Seen:
    """What this replica knows about the Lease, timed by its own monotonic clock."""

    record: LeaseRecord | None = None
    since: float = 0.0
    """When this replica first saw ``record`` (or wrote it)."""
    renewed: float | None = None
    """When this replica sent its last write that succeeded (None: none since it last lost)."""


@dataclass(frozen=True)
class Decision:
    seen: Seen
    write: LeaseRecord | None
    """What to write (None: leave the Lease alone)."""
    retry_in: float
    """Seconds until the next look."""


def decide(
    seen: Seen, record: LeaseRecord | None, me: str, now: float, wall: datetime, timing: Timing
) -> Decision:
    """Observe ``record`` (read at monotonic ``now``), then acquire, renew, take over or follow.

    ``wall`` only fills the Lease's acquireTime and renewTime.
    """
    if record != seen.record:
        seen = replace(seen, record=record, since=now)  # the holder is alive: restart the wait
    if record is None or record.holder is None:
        transitions = 0 if record is None else record.transitions + 1
        return Decision(seen, LeaseRecord(me, wall, wall, timing.duration, transitions), timing.retry)
    if record.holder == me:
        return Decision(seen, replace(record, renewed=wall, duration=timing.duration), timing.retry)
    expires = seen.since + record.duration
    if now >= expires:
        return Decision(
            seen, LeaseRecord(me, wall, wall, timing.duration, record.transitions + 1), timing.retry
        )
    return Decision(seen, None, min(timing.retry, expires - now))


def written(record: LeaseRecord | None, sent: float) -> Seen:
    """A write sent at ``sent`` succeeded and the server now holds ``record``."""
    return Seen(record, sent, sent)


def lost(seen: Seen) -> Seen:
    """A write was refused (409): someone else wrote first, so this replica leads no more."""
    return replace(seen, renewed=None)


def leading(seen: Seen, me: str, now: float, timing: Timing) -> bool:
    """Holder, and renewed within the renew deadline (measured from when the renewal was sent)."""
    return (
        seen.record is not None
        and seen.record.holder == me
        and seen.renewed is not None
        and now < seen.renewed + timing.renew_deadline
    )


def release(record: LeaseRecord, me: str) -> LeaseRecord | None:
    """On a clean stop the leader hands the Lease back so a follower need not wait for it to expire."""
    if record.holder != me:
        return None
    return replace(record, holder=None, renewed=None)
