"""Step 1, accept: may this report be applied at all?

Sources rank (routerd first, RAs as its fallback) and routerd's messages are
ordered by (boot, sequence), never by wall time. The answer is a typed
:class:`~clusterd.core.status.model.Rejection`, or None with any Events the
acceptance itself is worth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from clusterd.core.status.model import (
    SOURCE_RA,
    SOURCE_ROUTERD,
    Event,
    Policy,
    Refusal,
    Rejection,
    Report,
    parse_time,
    published_at,
)
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus, SourceStatus


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`accept`: why not (None: go ahead), and what to tell."""

    rejection: Rejection | None = None
    events: tuple[Event, ...] = ()


def routerd_record(status: DynamicPrefixStatus) -> SourceStatus | None:
    """The last routerd message applied: the source itself, or the one kept while RAs supply the prefix."""
    src = status.source
    return src if src is not None and src.kind == SOURCE_ROUTERD else status.routerd_source


def fallback_window(spec: DynamicPrefixSpec, policy: Policy) -> timedelta:
    """How long routerd must be silent before RAs supply the prefix."""
    ra = spec.acquisition.router_advertisement
    if ra is not None and ra.fallback_after_seconds is not None:
        return timedelta(seconds=ra.fallback_after_seconds)
    return policy.default_fallback_after


def accept(
    spec: DynamicPrefixSpec,
    status: DynamicPrefixStatus,
    report: Report,
    now: datetime,
    policy: Policy,
    source_heard_at: datetime | None,
) -> Verdict:
    """Whether ``report`` may be applied to ``status``.

    ``source_heard_at`` is when the routerd run the status records was last heard from.
    """
    rec = routerd_record(status)
    last = source_heard_at or (parse_time(rec.received_at) if rec is not None else None)
    window = fallback_window(spec, policy)
    if report.kind == SOURCE_RA:
        return _ra(spec, status, now, last, window)
    src = status.source
    if src is not None and src.kind == SOURCE_RA:
        # RAs took over because routerd went silent; a message from before that (a retained one
        # the broker hands over again) does not mean routerd is back.
        published = published_at(report)
        if published is None or now - published >= window:
            age = "of unknown age" if published is None else f"{int((now - published).total_seconds())} s old"
            why = f"a routerd message {age} while RAs supply the prefix; waiting for a newer one"
            return Verdict(Rejection(Refusal.TOO_OLD, why))
    # Ordered against the last routerd message applied, also while the RA fallback supplies the
    # prefix: else a stale retained message re-delivered on reconnect would replace the RA's prefix.
    if rec is None or (rec.router, rec.interface) != (report.state.router, report.state.interface):
        return Verdict()
    return _in_order(rec, report, now, policy, last)


def _ra(
    spec: DynamicPrefixSpec,
    status: DynamicPrefixStatus,
    now: datetime,
    last: datetime | None,
    window: timedelta,
) -> Verdict:
    """An RA applies unless routerd is the primary source and was heard within the window."""
    src = status.source
    routerd_primary = spec.acquisition.routerd is not None and src is not None and src.kind == SOURCE_ROUTERD
    if routerd_primary and last is not None and now - last < window:
        ago = int((now - last).total_seconds())
        why = f"routerd reported {ago} s ago; RAs are the fallback"
        return Verdict(Rejection(Refusal.FALLBACK_NOT_DUE, why))
    return Verdict()


def _in_order(
    rec: SourceStatus, report: Report, now: datetime, policy: Policy, last: datetime | None
) -> Verdict:
    """A routerd message from the router the status records: newer by (boot, sequence)?"""
    msg = report.state
    if msg.boot in rec.previous_boots:
        # A restarted router never reuses a boot id: this is a late or replayed message.
        why = f"a message from an earlier routerd run (boot {msg.boot}); ignored"
        return Verdict(Rejection(Refusal.EARLIER_BOOT, why))
    if rec.sequence is None or msg.sequence > rec.sequence:
        return Verdict()
    if msg.boot != rec.boot:
        if last is not None and now - last >= policy.boot_grace:
            reset = Event(
                "Warning",
                "SequenceReset",
                f"routerd {msg.router} restarted with sequence {msg.sequence} below {rec.sequence} "
                "(its state directory was lost?); accepted because the previous run went silent",
            )
            return Verdict(events=(reset,))
        grace = int(policy.boot_grace.total_seconds())
        why = (f"sequence {msg.sequence} from a new routerd run is below {rec.sequence}; ignored until the old run "
               f"has been silent for {grace} s (replay protection)")  # fmt: skip
        return Verdict(Rejection(Refusal.SEQUENCE_REGRESSED, why))
    why = f"sequence {msg.sequence} is not newer than {rec.sequence} (duplicate or out of order)"
    return Verdict(Rejection(Refusal.NOT_NEWER, why))
