"""What the status pipeline takes and returns: reports, policy, events, rejections, the plan.

Also :class:`Draft`, the value each step hands to the next: the parts of the
status the steps change, before the status object is built from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from ipaddress import IPv6Network
from typing import Literal

from clusterd.crd import DynamicPrefixStatus, HistoryEntry, SourceStatus
from routerd.core.sequence import PLAUSIBLE_WALL_MS
from routerd.core.wire import PrefixState

SOURCE_ROUTERD = "routerd"
SOURCE_RA = "router-advertisement"
PLAUSIBLE_WALL = datetime(1970, 1, 1) + timedelta(milliseconds=PLAUSIBLE_WALL_MS)


def parse_time(s: str | None) -> datetime | None:
    """A status time (RFC 3339, UTC, whole seconds) as naive UTC."""
    if s is None:
        return None
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=None)


@dataclass(frozen=True)
class Report:
    """One prefix state as received, with how and when."""

    kind: Literal["routerd", "router-advertisement"]
    transport: Literal["mqtt", "webhook", "raw-socket"]
    state: PrefixState
    received_at: datetime
    retained: bool = False
    """A retained MQTT message (the broker kept it, so it may be old), not one passed on live."""
    expiry_interval: int | None = None
    """Its MQTT 5 Message Expiry Interval as delivered: the broker counts it down while it keeps it."""


def published_at(report: Report) -> datetime | None:
    """When the state was published, which lifetimes count from; None when nothing tells.

    A live message was published as it arrived. A retained one may be hours
    old (docs/wire-protocol.md, "Message age"): over MQTT 5 routerd sets the
    expiry to the longest valid lifetime and the broker counts it down, so
    their difference is its age; else ``observedAt`` when the router's clock
    looks synced. Neither is ever later than the arrival.
    """
    if not report.retained:
        return report.received_at
    lifetimes = [p.valid_lifetime for p in report.state.prefixes]
    if report.expiry_interval is not None and lifetimes and None not in lifetimes:
        age = max(0, max(v for v in lifetimes if v is not None) - report.expiry_interval)
        return report.received_at - timedelta(seconds=age)
    try:
        observed = parse_time(report.state.observed_at)
    except ValueError:
        return None
    if observed is None or observed < PLAUSIBLE_WALL:
        return None  # the router's clock was not synced (routerd's sequence uses the same bound)
    return min(observed, report.received_at)


@dataclass(frozen=True)
class Policy:
    """Knobs of the planner (clusterd's configuration sets them)."""

    allow_ula: bool = False
    boot_grace: timedelta = timedelta(minutes=15)
    """A new routerd boot whose sequence went backwards is accepted once the old boot
    has been silent this long (its state file was lost; it is not a replay)."""
    default_fallback_after: timedelta = timedelta(minutes=15)
    """With both routerd and RA sources: RAs apply once routerd has been silent this long."""


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


class Refusal(Enum):
    """Why a report was not applied; the value is the Degraded reason where one is set."""

    FALLBACK_NOT_DUE = "FallbackNotDue"
    """An RA while routerd, the primary source, is still heard from."""
    TOO_OLD = "TooOld"
    """A routerd message published before the fallback window while RAs supply the prefix."""
    EARLIER_BOOT = "EarlierBoot"
    """A message from a routerd run that was replaced (late, or replayed)."""
    SEQUENCE_REGRESSED = "SequenceRegressed"
    """A new routerd run whose sequence is below the old one's, within the boot grace."""
    NOT_NEWER = "NotNewer"
    """A duplicate, or out of order."""


@dataclass(frozen=True)
class Rejection:
    """A report the planner did not apply: the kind of refusal, and a message for people."""

    kind: Refusal
    message: str


@dataclass(frozen=True)
class Plan:
    status: DynamicPrefixStatus
    events: tuple[Event, ...] = ()
    next_check: datetime | None = None
    rejected: Rejection | None = None
    """Why the report was not applied (None when it was, or when there was none)."""


@dataclass(frozen=True)
class Draft:
    """The parts of the status the steps move, handed from one step to the next.

    ``history`` is ordered as the status lists it (insertion order); ``events``
    collects what each step has to say, in step order.
    """

    current: IPv6Network | None
    prefix_source: str | None
    source: SourceStatus | None
    history: Mapping[str, HistoryEntry]
    pruned: tuple[str, ...]
    listed: frozenset[str] | None = None
    """The prefixes the applied report lists, if one was applied (pruning forgets the rest)."""
    events: tuple[Event, ...] = ()

    @classmethod
    def of(cls, status: DynamicPrefixStatus) -> Draft:
        """The draft as the stored status has it."""
        return cls(
            current=status.prefix,
            prefix_source=status.prefix_source,
            source=status.source,
            history={h.prefix: h for h in status.history},
            pruned=tuple(status.pruned),
        )
