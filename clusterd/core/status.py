"""The status planner: (spec, status, report, now) -> the next status and the Events to send.

Pure. A *report* is one prefix-state message (from routerd over MQTT or the
webhook, or clusterd's own RA listener); the planner decides whether it may
be applied (sequence order, fallback rules), which prefix becomes current,
how the history moves (active -> draining -> expired -> pruned) and what the
conditions say. Everything that must survive a restart lives in the status it
returns; nothing here keeps memory between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from ipaddress import IPv6Address, IPv6Network
from typing import Literal

from clusterd.core import ranges
from clusterd.crd import (
    MAX_PRUNED,
    Condition,
    DynamicPrefixSpec,
    DynamicPrefixStatus,
    HistoryEntry,
    RangeStatus,
    SourceStatus,
    SubnetStatus,
)
from routerd.core.sequence import PLAUSIBLE_WALL_MS
from routerd.core.tracker import GLOBAL_UNICAST, UNIQUE_LOCAL
from routerd.core.wire import PrefixState, PrefixStatus
from routerd.core.wire import timestamp as rfc3339

PREFIX_ACQUIRED = "PrefixAcquired"
POOLS_SYNCED = "PoolsSynced"
SERVICES_SYNCED = "ServicesSynced"
DEGRADED = "Degraded"
READY = "Ready"
READY_WHEN = (
    (PREFIX_ACQUIRED, "True"),
    (POOLS_SYNCED, "True"),
    (SERVICES_SYNCED, "True"),
    (DEGRADED, "False"),
)
"""Ready is True when each of these conditions has this status (docs/clusterd.md, "Conditions")."""
SOURCE_ROUTERD = "routerd"
SOURCE_RA = "router-advertisement"
PLAUSIBLE_WALL = datetime(1970, 1, 1) + timedelta(milliseconds=PLAUSIBLE_WALL_MS)


def parse_time(s: str | None) -> datetime | None:
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
    kind: Refusal
    message: str


@dataclass(frozen=True)
class Plan:
    status: DynamicPrefixStatus
    events: tuple[Event, ...] = ()
    next_check: datetime | None = None
    rejected: Rejection | None = None
    """Why the report was not applied (None when it was, or when there was none)."""


@dataclass
class _Conditions:
    now: datetime
    generation: int
    old: dict[str, Condition]
    new: dict[str, Condition] = field(default_factory=dict)

    def set(self, type_: str, status: Literal["True", "False", "Unknown"], reason: str, message: str) -> None:
        prev = self.old.get(type_)
        changed = prev is None or prev.status != status
        self.new[type_] = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=rfc3339(self.now) if changed or prev is None else prev.last_transition_time,
            observed_generation=self.generation,
        )

    def _ready(self) -> None:
        """Ready: derived from the others, the first one not as it should be gives the reason."""
        for type_, want in READY_WHEN:
            c = self.new.get(type_)
            if c is None:
                self.set(READY, "False", "Pending", f"{type_} is not known yet")
                return
            if c.status != want:
                self.set(READY, "False", c.reason, f"{type_} is {c.status}: {c.message}"[:32768])
                return
        self.set(READY, "True", "Ready", "")

    def keep(self, type_: str) -> None:
        if type_ in self.old:
            self.new[type_] = self.old[type_]

    def ordered(self) -> list[Condition]:
        self._ready()
        order = [READY, PREFIX_ACQUIRED, POOLS_SYNCED, SERVICES_SYNCED, DEGRADED]
        return sorted(
            self.new.values(), key=lambda c: (order.index(c.type) if c.type in order else 99, c.type)
        )


def usable(prefix: IPv6Network, allow_ula: bool) -> bool:
    return prefix.subnet_of(GLOBAL_UNICAST) or (allow_ula and prefix.subnet_of(UNIQUE_LOCAL))


def routerd_record(status: DynamicPrefixStatus) -> SourceStatus | None:
    """The last routerd message applied: the source itself, or the one kept while RAs supply the prefix."""
    src = status.source
    return src if src is not None and src.kind == SOURCE_ROUTERD else status.routerd_source


def _accept(
    spec: DynamicPrefixSpec,
    status: DynamicPrefixStatus,
    report: Report,
    now: datetime,
    policy: Policy,
    source_heard_at: datetime | None,
) -> tuple[Rejection | None, tuple[Event, ...]]:
    """None if the report may be applied, else why it may not.

    ``source_heard_at`` is when the routerd run the status records was last heard from.
    """
    msg = report.state
    rec = routerd_record(status)
    src = status.source
    last = source_heard_at or (parse_time(rec.received_at) if rec is not None else None)
    ra = spec.acquisition.router_advertisement
    window = (
        timedelta(seconds=ra.fallback_after_seconds)
        if ra is not None and ra.fallback_after_seconds is not None
        else policy.default_fallback_after
    )
    if report.kind == SOURCE_RA:
        routerd_primary = (
            spec.acquisition.routerd is not None and src is not None and src.kind == SOURCE_ROUTERD
        )
        if routerd_primary and last is not None and now - last < window:
            ago = int((now - last).total_seconds())
            return Rejection(
                Refusal.FALLBACK_NOT_DUE, f"routerd reported {ago} s ago; RAs are the fallback"
            ), ()
        return None, ()
    if src is not None and src.kind == SOURCE_RA:
        # RAs took over because routerd went silent; a message from before that (a retained one
        # the broker hands over again) does not mean routerd is back.
        published = published_at(report)
        if published is None or now - published >= window:
            age = "of unknown age" if published is None else f"{int((now - published).total_seconds())} s old"
            why = f"a routerd message {age} while RAs supply the prefix; waiting for a newer one"
            return Rejection(Refusal.TOO_OLD, why), ()
    # Ordered against the last routerd message applied, also while the RA fallback supplies the
    # prefix: else a stale retained message re-delivered on reconnect would replace the RA's prefix.
    if rec is None or (rec.router, rec.interface) != (msg.router, msg.interface):
        return None, ()
    if msg.boot in rec.previous_boots:
        # A restarted router never reuses a boot id: this is a late or replayed message.
        return Rejection(
            Refusal.EARLIER_BOOT, f"a message from an earlier routerd run (boot {msg.boot}); ignored"
        ), ()
    if rec.sequence is None or msg.sequence > rec.sequence:
        return None, ()
    if msg.boot != rec.boot:
        if last is not None and now - last >= policy.boot_grace:
            return None, (
                Event(
                    "Warning",
                    "SequenceReset",
                    f"routerd {msg.router} restarted with sequence {msg.sequence} below {rec.sequence} "
                    "(its state directory was lost?); accepted because the previous run went silent",
                ),
            )
        grace = int(policy.boot_grace.total_seconds())
        why = (f"sequence {msg.sequence} from a new routerd run is below {rec.sequence}; ignored until the old run "
               f"has been silent for {grace} s (replay protection)")  # fmt: skip
        return Rejection(Refusal.SEQUENCE_REGRESSED, why), ()
    why = f"sequence {msg.sequence} is not newer than {rec.sequence} (duplicate or out of order)"
    return Rejection(Refusal.NOT_NEWER, why), ()


def _wanted(spec: DynamicPrefixSpec, prefix: IPv6Network, policy: Policy) -> bool:
    """The filters every prefix passes before it enters the status (current or history)."""
    want = spec.acquisition.routerd.prefix_length if spec.acquisition.routerd else None
    return usable(prefix, policy.allow_ula) and (want is None or prefix.prefixlen == want)


def _pick(spec: DynamicPrefixSpec, msg: PrefixState, policy: Policy) -> IPv6Network | None:
    for p in msg.prefixes:
        if p.state is PrefixStatus.PREFERRED and _wanted(spec, p.prefix, policy):
            return p.prefix
    return None


def _valid_until(received: datetime, lifetime: int | None) -> datetime | None:
    return None if lifetime is None else received + timedelta(seconds=lifetime)


def _refresh(stored: str | None, new: datetime | None, now: datetime) -> str | None:
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


def placed_ranges(
    spec: DynamicPrefixSpec, prefix: IPv6Network
) -> tuple[dict[str, ranges.PlacedRange], list[str]]:
    """Each address range placed in ``prefix``, and errors for those that do not fit."""
    out: dict[str, ranges.PlacedRange] = {}
    errors = []
    for r in spec.address_ranges:
        try:
            out[r.name] = ranges.place_range(prefix, IPv6Address(r.start), IPv6Address(r.end))
        except ranges.RangeError as e:
            errors.append(f"range {r.name}: {e}")
    return out, errors


def placed_subnets(spec: DynamicPrefixSpec, prefix: IPv6Network) -> tuple[dict[str, IPv6Network], list[str]]:
    out: dict[str, IPv6Network] = {}
    errors = []
    for s in spec.subnets:
        try:
            out[s.name] = ranges.place_subnet(prefix, s.offset, s.prefix_length)
        except ranges.RangeError as e:
            errors.append(f"subnet {s.name}: {e}")
    return out, errors


def plan(
    spec: DynamicPrefixSpec,
    status: DynamicPrefixStatus,
    report: Report | None,
    now: datetime,
    generation: int,
    policy: Policy | None = None,
    source_heard_at: datetime | None = None,
    environment_problem: tuple[str, str] | None = None,
) -> Plan:
    """The next status. ``now`` and times are naive UTC.

    ``source_heard_at`` is when the routerd run of :func:`routerd_record` was
    last heard from (the controller remembers it; heartbeats do not write the
    status). Without it that record's own ``receivedAt`` stands in.
    ``environment_problem`` is (reason, message) for something outside the
    object that keeps it from working (the RA listener is off); it sets Degraded.
    """
    policy = policy or Policy()
    events: list[Event] = []
    conds = _Conditions(now, generation, {c.type: c for c in status.conditions})
    rejected: Rejection | None = None
    current = status.prefix
    source = status.source
    prefix_source = status.prefix_source
    history = {h.prefix: h for h in status.history}
    pruned = list(status.pruned)
    listed: set[str] | None = None
    """The prefixes of the report applied, if one was."""
    report_lifetimes: dict[str, datetime | None] = {}

    if report is not None:
        rejected, accept_events = _accept(spec, status, report, now, policy, source_heard_at)
        events += accept_events
    if report is not None and rejected is None:
        msg = report.state
        published = published_at(report)
        for p in msg.prefixes:
            # Lifetimes are remaining seconds at publication (docs/wire-protocol.md, rule 4).
            report_lifetimes[str(p.prefix)] = _valid_until(published or report.received_at, p.valid_lifetime)
        listed = set(report_lifetimes)
        chosen = _pick(spec, msg, policy)
        rec = routerd_record(status)
        earlier: list[str] = []
        if report.kind == SOURCE_ROUTERD and rec is not None:
            earlier = list(rec.previous_boots)
            if rec.boot and rec.boot != msg.boot:
                earlier = [*earlier, rec.boot][-8:]
        # When routerd was last heard from: a retained message of unknown age says nothing.
        heard = (
            rfc3339(published) if published is not None else (rec.received_at if rec is not None else None)
        )
        new_source = SourceStatus(
            kind=report.kind,
            router=msg.router if report.kind == SOURCE_ROUTERD else None,
            interface=msg.interface,
            transport=report.transport,
            boot=msg.boot if report.kind == SOURCE_ROUTERD else None,
            sequence=msg.sequence if report.kind == SOURCE_ROUTERD else None,
            received_at=heard,
            previous_boots=earlier,
        )
        if chosen != current:
            origin = f"{msg.router}/{msg.interface}" if report.kind == SOURCE_ROUTERD else msg.interface
            if chosen is not None and current is not None:
                events.append(
                    Event("Normal", "PrefixChanged", f"{current} -> {chosen} from {report.kind} {origin}")
                )
            elif chosen is not None:
                events.append(Event("Normal", "PrefixAcquired", f"{chosen} from {report.kind} {origin}"))
            else:
                events.append(
                    Event(
                        "Warning",
                        "PrefixLost",
                        f"{report.kind} {origin} lists no usable preferred prefix; {current} drains",
                    )
                )
            if current is not None:
                old = history.get(str(current))
                if old is not None:
                    history[str(current)] = old.model_copy(
                        update={"deprecated_at": old.deprecated_at or rfc3339(now), "state": "draining"}
                    )
            if chosen is not None:
                v = report_lifetimes.get(str(chosen))
                history[str(chosen)] = HistoryEntry(
                    prefix=str(chosen),
                    acquired_at=rfc3339(now),
                    deprecated_at=None,
                    valid_until=rfc3339(v) if v else None,
                    state="active",
                )
                pruned = [x for x in pruned if x != str(chosen)]
            current = chosen
            prefix_source = report.kind if chosen is not None else prefix_source
            source = new_source
        elif source is None or source.kind != new_source.kind or source.boot != new_source.boot:
            source = new_source  # a new boot or a new kind of source must be remembered
        else:
            # Same prefix: record the sequence only if something else changes too
            # (no API write for a heartbeat); order is kept by the last change.
            source = source if _only_heartbeat(history, report_lifetimes, now) else new_source
        # An old prefix clusterd never saw as current (it started after the change, or missed
        # it) still has addresses in use: it drains like any other. Seen together, the one with
        # the most valid lifetime left was withdrawn last: it goes first.
        for p in sorted(
            msg.prefixes, key=lambda p: -(p.valid_lifetime if p.valid_lifetime is not None else 2**32)
        ):
            name = str(p.prefix)
            if name in history or p.prefix == current or p.state is PrefixStatus.PREFERRED:
                continue
            if name in pruned:
                continue  # pruned by maxPrefixHistory: it stays out while the router lists it
            if p.valid_lifetime == 0 or not _wanted(spec, p.prefix, policy):
                continue
            history[name] = HistoryEntry(
                prefix=name,
                acquired_at=rfc3339(report.received_at),
                deprecated_at=rfc3339(now),
                valid_until=None,
                state="draining",
            )
        for name, until in report_lifetimes.items():
            entry = history.get(name)
            if entry is not None:
                history[name] = entry.model_copy(
                    update={"valid_until": _refresh(entry.valid_until, until, now)}
                )

    # -- history: active, draining, expired, pruned ------------------------------------------
    entries: list[HistoryEntry] = []
    for h in history.values():
        if current is not None and h.prefix == str(current):
            entries.append(h.model_copy(update={"state": "active", "deprecated_at": None}))
            continue
        until = parse_time(h.valid_until)
        state: Literal["draining", "expired"] = "draining" if until is None or until > now else "expired"
        if h.state != "expired" and state == "expired":
            events.append(
                Event("Normal", "PrefixExpired", f"{h.prefix}: valid lifetime ended; pools drop it")
            )
        entries.append(
            h.model_copy(update={"state": state, "deprecated_at": h.deprecated_at or rfc3339(now)})
        )
    active = [h for h in entries if h.state == "active"]
    # Newest first by when clusterd saw each prefix stop being current (or first saw it already
    # deprecated), a time set once; equal times keep the order the prefixes entered the history.
    previous = sorted((h for h in entries if h.state != "active"), key=lambda h: h.deprecated_at or "",
                      reverse=True)  # fmt: skip
    keep = spec.transition.max_prefix_history
    for dropped in previous[keep:]:
        if dropped.state == "draining":
            why = f"{dropped.prefix}: more than maxPrefixHistory={keep} previous prefixes; pools drop it"
            events.append(Event("Normal", "PrefixPruned", why))
        if dropped.prefix not in pruned:
            pruned.append(dropped.prefix)
    if listed is not None:
        pruned = [x for x in pruned if x in listed]  # the router no longer lists it: forget it
    new_history = active + previous[:keep]

    # -- what the current prefix yields -----------------------------------------------------
    problems: list[str] = []
    range_status: list[RangeStatus] = []
    subnet_status: list[SubnetStatus] = []
    if current is not None:
        placed, errs = placed_ranges(spec, current)
        problems += errs
        range_status = [
            RangeStatus(name=n, start=str(r.start), end=str(r.end), cidrs=[str(c) for c in r.cidrs])
            for n, r in placed.items()
        ]
        subnets, errs = placed_subnets(spec, current)
        problems += errs
        subnet_status = [SubnetStatus(name=n, cidr=str(c)) for n, c in subnets.items()]
    lease = next((h.valid_until for h in active), None)

    # -- conditions ------------------------------------------------------------------------------
    if current is not None:
        how = (
            f"{source.router}/{source.interface}"
            if source and source.router
            else (source.interface if source else "")
        )
        conds.set(PREFIX_ACQUIRED, "True", "Acquired", f"{current} from {prefix_source} {how}".strip())
    elif history:
        conds.set(PREFIX_ACQUIRED, "False", "NoPreferredPrefix",
                  "the source lists no usable preferred prefix; previous prefixes keep draining")  # fmt: skip
    else:
        conds.set(PREFIX_ACQUIRED, "False", "WaitingForPrefix", _waiting_message(spec))
    conds.keep(POOLS_SYNCED)
    conds.keep(SERVICES_SYNCED)
    only_pd = (
        spec.acquisition.dhcpv6pd is not None
        and spec.acquisition.routerd is None
        and (
            spec.acquisition.router_advertisement is None or not spec.acquisition.router_advertisement.enabled
        )
    )
    if problems:
        conds.set(DEGRADED, "True", "RangeOutsidePrefix", "; ".join(problems))
    elif environment_problem is not None:
        conds.set(DEGRADED, "True", *environment_problem)

    elif rejected is not None and rejected.kind is Refusal.SEQUENCE_REGRESSED:
        conds.set(DEGRADED, "True", rejected.kind.value, rejected.message)
    elif (
        report is None
        and (was := conds.old.get(DEGRADED)) is not None
        and was.reason == Refusal.SEQUENCE_REGRESSED.value
    ):
        conds.keep(DEGRADED)  # stays until a message from the new run is accepted
    elif only_pd:
        conds.set(DEGRADED, "True", "DHCPv6PDNotSupported",
                  "clusterd is not a DHCPv6 client: run routerd on the router with its DHCPv6 hook "
                  "and add spec.acquisition.routerd")  # fmt: skip
    else:
        conds.set(DEGRADED, "False", "AsExpected", "")

    new_status = DynamicPrefixStatus(
        current_prefix=str(current) if current is not None else None,
        prefix_source=prefix_source,
        lease_expires_at=lease,
        address_ranges=range_status,
        subnets=subnet_status,
        history=new_history,
        pruned=pruned[-MAX_PRUNED:],
        source=source,
        routerd_source=routerd_record(status) if source is not None and source.kind == SOURCE_RA else None,
        observed_generation=generation,
        conditions=conds.ordered(),
        targets=status.targets,
    )
    deadlines = [
        t for h in new_history if h.state == "draining" and (t := parse_time(h.valid_until)) is not None
    ]
    return Plan(
        status=new_status,
        events=tuple(events),
        next_check=min(deadlines) if deadlines else None,
        rejected=rejected,
    )


def _only_heartbeat(
    history: dict[str, HistoryEntry], lifetimes: dict[str, datetime | None], now: datetime
) -> bool:
    """True when applying this report would change nothing but lifetimes within the slack."""
    for name, until in lifetimes.items():
        entry = history.get(name)
        if entry is not None and _refresh(entry.valid_until, until, now) != entry.valid_until:
            return False
    return True


def _waiting_message(spec: DynamicPrefixSpec) -> str:
    a = spec.acquisition
    if a.routerd is not None:
        return f"waiting for a message from routerd {a.routerd.router}/{a.routerd.interface}"
    if a.router_advertisement is not None and a.router_advertisement.enabled:
        return f"waiting for a Router Advertisement on {a.router_advertisement.interface}"
    return "no enabled acquisition source"


def with_condition(
    status: DynamicPrefixStatus,
    now: datetime,
    generation: int,
    type_: str,
    ok: bool,
    reason: str,
    message: str,
) -> DynamicPrefixStatus:
    """``status`` with one condition set (its transition time moves only when its status does)."""
    conds = _Conditions(now, generation, {c.type: c for c in status.conditions})
    for c in status.conditions:
        conds.keep(c.type)
    conds.set(type_, "True" if ok else "False", reason, message)
    return status.model_copy(update={"conditions": conds.ordered()})
