"""Step 2, apply an accepted report: which prefix is current, which source is recorded.

The history gains the new prefix (active) and the old one (draining), and
every listed prefix's valid-until is refreshed when it moved enough to be
worth an API write.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from ipaddress import IPv6Network

from clusterd.core.status.accept import routerd_record
from clusterd.core.status.model import (
    SOURCE_ROUTERD,
    Draft,
    Event,
    Policy,
    Report,
    parse_time,
    published_at,
)
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus, HistoryEntry, SourceStatus
from routerd.core.tracker import GLOBAL_UNICAST, UNIQUE_LOCAL
from routerd.core.wire import PrefixStatus
from routerd.core.wire import timestamp as rfc3339

Lifetimes = dict[str, datetime | None]
"""Each listed prefix's end of valid lifetime (None: infinite)."""


def usable(prefix: IPv6Network, allow_ula: bool) -> bool:
    return prefix.subnet_of(GLOBAL_UNICAST) or (allow_ula and prefix.subnet_of(UNIQUE_LOCAL))


def wanted(spec: DynamicPrefixSpec, prefix: IPv6Network, policy: Policy) -> bool:
    """The filters every prefix passes before it enters the status (current or history)."""
    want = spec.acquisition.routerd.prefix_length if spec.acquisition.routerd else None
    return usable(prefix, policy.allow_ula) and (want is None or prefix.prefixlen == want)


def apply_report(
    draft: Draft,
    spec: DynamicPrefixSpec,
    status: DynamicPrefixStatus,
    report: Report,
    now: datetime,
    policy: Policy,
) -> Draft:
    """``draft`` with an accepted ``report`` applied (``status`` is the status as stored)."""
    published = published_at(report)
    # Lifetimes are remaining seconds at publication (docs/wire-protocol.md, rule 4).
    start = published or report.received_at
    lifetimes: Lifetimes = {
        str(p.prefix): None if p.valid_lifetime is None else start + timedelta(seconds=p.valid_lifetime)
        for p in report.state.prefixes
    }
    new_source = _source(status, report, published)
    chosen = next(
        (p.prefix for p in report.state.prefixes
         if p.state is PrefixStatus.PREFERRED and wanted(spec, p.prefix, policy)),
        None,
    )  # fmt: skip
    if chosen != draft.current:
        draft = _switch(draft, chosen, report, new_source, lifetimes, now)
    elif draft.source is None or (draft.source.kind, draft.source.boot) != (new_source.kind, new_source.boot):
        draft = replace(draft, source=new_source)  # a new boot or a new kind of source must be remembered
    elif not _only_heartbeat(draft, lifetimes, now):
        # Same prefix: record the sequence only if something else changes too
        # (no API write for a heartbeat); order is kept by the last change.
        draft = replace(draft, source=new_source)
    draft = _adopt_unseen(draft, spec, report, now, policy)
    history = dict(draft.history)
    for name, until in lifetimes.items():
        entry = history.get(name)
        if entry is not None:
            history[name] = entry.model_copy(update={"valid_until": refresh(entry.valid_until, until, now)})
    return replace(draft, history=history, listed=frozenset(lifetimes))


def refresh(stored: str | None, new: datetime | None, now: datetime) -> str | None:
    """Keep the stored validUntil unless the new one is shorter or much longer.

    A router refreshes lifetimes on every RA; writing each refresh would make
    every heartbeat an API write. Shortening always counts (draining depends
    on it); lengthening counts past max(5 min, a quarter of the lifetime).
    """
    if new is None:
        return None
    old = parse_time(stored)
    if old is None and stored is None:
        return rfc3339(new)
    assert old is not None
    slack = max(timedelta(minutes=5), (new - now) / 4)
    if new < old - timedelta(seconds=5) or new > old + slack:
        return rfc3339(new)
    return stored


def _source(status: DynamicPrefixStatus, report: Report, published: datetime | None) -> SourceStatus:
    """The source record ``report`` would leave in the status."""
    msg = report.state
    rec = routerd_record(status)
    from_routerd = report.kind == SOURCE_ROUTERD
    earlier: list[str] = []
    if from_routerd and rec is not None:
        earlier = list(rec.previous_boots)
        if rec.boot and rec.boot != msg.boot:
            earlier = [*earlier, rec.boot][-8:]
    # When routerd was last heard from: a retained message of unknown age says nothing.
    heard = rfc3339(published) if published is not None else (rec.received_at if rec is not None else None)
    return SourceStatus(
        kind=report.kind,
        router=msg.router if from_routerd else None,
        interface=msg.interface,
        transport=report.transport,
        boot=msg.boot if from_routerd else None,
        sequence=msg.sequence if from_routerd else None,
        received_at=heard,
        previous_boots=earlier,
    )


def _switch(
    draft: Draft,
    chosen: IPv6Network | None,
    report: Report,
    new_source: SourceStatus,
    lifetimes: Lifetimes,
    now: datetime,
) -> Draft:
    """A new current prefix (or none): the old one starts draining, the new one is active."""
    current, msg = draft.current, report.state
    origin = f"{msg.router}/{msg.interface}" if report.kind == SOURCE_ROUTERD else msg.interface
    if chosen is not None and current is not None:
        event = Event("Normal", "PrefixChanged", f"{current} -> {chosen} from {report.kind} {origin}")
    elif chosen is not None:
        event = Event("Normal", "PrefixAcquired", f"{chosen} from {report.kind} {origin}")
    else:
        why = f"{report.kind} {origin} lists no usable preferred prefix; {current} drains"
        event = Event("Warning", "PrefixLost", why)
    history = dict(draft.history)
    pruned = draft.pruned
    if current is not None and (old := history.get(str(current))) is not None:
        history[str(current)] = old.model_copy(
            update={"deprecated_at": old.deprecated_at or rfc3339(now), "state": "draining"}
        )
    if chosen is not None:
        until = lifetimes.get(str(chosen))
        history[str(chosen)] = HistoryEntry(
            prefix=str(chosen),
            acquired_at=rfc3339(now),
            deprecated_at=None,
            valid_until=rfc3339(until) if until else None,
            state="active",
        )
        pruned = tuple(x for x in pruned if x != str(chosen))
    return replace(
        draft,
        current=chosen,
        prefix_source=report.kind if chosen is not None else draft.prefix_source,
        source=new_source,
        history=history,
        pruned=pruned,
        events=(*draft.events, event),
    )


def _adopt_unseen(
    draft: Draft, spec: DynamicPrefixSpec, report: Report, now: datetime, policy: Policy
) -> Draft:
    """Old prefixes the report lists that the history lacks enter it as draining.

    An old prefix clusterd never saw as current (it started after the change, or missed
    it) still has addresses in use: it drains like any other. Seen together, the one with
    the most valid lifetime left was withdrawn last: it goes first.
    """
    history = dict(draft.history)
    by_lifetime = sorted(
        report.state.prefixes, key=lambda p: -(p.valid_lifetime if p.valid_lifetime is not None else 2**32)
    )
    for p in by_lifetime:
        name = str(p.prefix)
        if name in history or p.prefix == draft.current or p.state is PrefixStatus.PREFERRED:
            continue
        if name in draft.pruned:
            continue  # pruned by maxPrefixHistory: it stays out while the router lists it
        if p.valid_lifetime == 0 or not wanted(spec, p.prefix, policy):
            continue
        history[name] = HistoryEntry(
            prefix=name,
            acquired_at=rfc3339(report.received_at),
            deprecated_at=rfc3339(now),
            valid_until=None,
            state="draining",
        )
    return replace(draft, history=history)


def _only_heartbeat(draft: Draft, lifetimes: Lifetimes, now: datetime) -> bool:
    """True when applying this report would change nothing but lifetimes within the slack."""
    for name, until in lifetimes.items():
        entry = draft.history.get(name)
        if entry is not None and refresh(entry.valid_until, until, now) != entry.valid_until:
            return False
    return True
