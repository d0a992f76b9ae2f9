"""The status planner (clusterd/core/status.py), on virtual time.

History without duplicates and with the right acquiredAt, draining until the
valid lifetime ends, pruning past maxPrefixHistory (a pruned prefix stays out
while the router lists it), sequence order across routerd restarts and across
the RA fallback, RA fallback rules, the prefix-length filter, a retained
message's age, conditions, events; and properties: any sequence of reports
yields a valid status, and a repeated plan is a no-op.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterd.core.status import Policy, Refusal, Report, plan, published_at, with_condition
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from routerd.core.wire import PrefixState

T0 = datetime(2026, 11, 26, 12, 0, 0)
A, B, C, D = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64", "2001:db8:d::/64"


def spec(**over: Any) -> DynamicPrefixSpec:
    doc: dict[str, Any] = {
        "acquisition": {"routerd": {"router": "edge", "interface": "br-lan"}},
        "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
        "transition": {"mode": "simple", "maxPrefixHistory": 2},
    }
    doc.update(over)
    return DynamicPrefixSpec.model_validate(doc)


def entry(
    prefix: str, state: str = "preferred", valid: int | None = 86400, preferred: int | None = 14400
) -> dict[str, Any]:
    if state != "preferred":
        preferred = 0
    elif valid is not None and preferred is not None:
        preferred = min(preferred, valid)
    elif valid is not None:
        preferred = valid

    return {
        "prefix": prefix,
        "state": state,
        "validLifetime": valid,
        "preferredLifetime": preferred,
        "sources": ["ra"],
    }


UNSET = datetime.min


def report(seq: int, *prefixes: dict[str, Any], at: datetime = UNSET, boot: str = "0" * 16,
           kind: str = "routerd") -> Report:  # fmt: skip
    state = PrefixState.model_validate({
        "router": "edge", "interface": "br-lan", "boot": boot, "sequence": seq,
        "observedAt": "x", "prefixes": list(prefixes),
    })  # fmt: skip
    return Report(
        kind=kind, transport="mqtt" if kind == "routerd" else "raw-socket", state=state, received_at=at
    )  # type: ignore[arg-type]


class Run:
    """Feed reports through the planner the way the controller does."""

    def __init__(self, s: DynamicPrefixSpec | None = None, policy: Policy | None = None) -> None:
        self.spec = s or spec()
        self.status = DynamicPrefixStatus()
        self.policy = policy or Policy()
        self.events: list[str] = []

    def feed(self, r: Report | None, now: datetime, heard: datetime | None = None) -> Any:
        if r is not None and r.received_at == UNSET:
            r = dataclasses.replace(r, received_at=now)  # received as it is planned, like the controller
        p = plan(self.spec, self.status, r, now, 1, self.policy, source_heard_at=heard)
        self.status = p.status
        self.events += [e.reason for e in p.events]
        return p

    def history(self) -> list[tuple[str, str]]:
        return [(h.prefix, h.state) for h in self.status.history]

    def cond(self, type_: str) -> tuple[str, str]:
        c = next(c for c in self.status.conditions if c.type == type_)
        return c.status, c.reason


def test_first_message_acquires_and_computes_the_ranges() -> None:
    r = Run()
    r.feed(report(1, entry(A)), T0)
    s = r.status
    assert s.current_prefix == A and s.prefix_source == "routerd"
    assert s.lease_expires_at == "2026-11-27T12:00:00Z"
    assert [(x.name, x.start, x.end, x.cidrs) for x in s.address_ranges] == [
        ("lb", "2001:db8:a:0:f000::", "2001:db8:a:0:ffff:ffff:ffff:ffff", ["2001:db8:a:0:f000::/68"])
    ]
    assert r.history() == [(A, "active")] and s.history[0].acquired_at == "2026-11-26T12:00:00Z"
    assert r.cond("PrefixAcquired") == ("True", "Acquired") and r.cond("Degraded") == ("False", "AsExpected")
    assert r.events == ["PrefixAcquired"]
    assert s.source is not None and (s.source.sequence, s.source.transport) == (1, "mqtt")


def test_a_repeated_message_and_a_heartbeat_change_nothing() -> None:
    r = Run()
    r.feed(report(5, entry(A)), T0)
    before = r.status
    p = r.feed(report(5, entry(A)), T0 + timedelta(seconds=1))
    assert p.rejected is not None and p.rejected.kind is Refusal.NOT_NEWER and r.status == before
    p = r.feed(report(6, entry(A, valid=86400)), T0 + timedelta(minutes=5))  # a heartbeat, lifetime refreshed
    assert p.rejected is None and r.status == before
    r.feed(report(4, entry(B)), T0 + timedelta(minutes=6))  # an old message arriving late
    assert r.status.current_prefix == A


def test_renumbering_keeps_the_old_prefix_draining_with_its_lifetime() -> None:
    r = Run()
    r.feed(report(1, entry(A)), T0)
    t1 = T0 + timedelta(hours=3)
    p = r.feed(report(2, entry(B), entry(A, "withdrawn", valid=7200)), t1)
    assert r.status.current_prefix == B
    assert r.history() == [(B, "active"), (A, "draining")]
    old = r.status.history[1]
    assert old.deprecated_at == "2026-11-26T15:00:00Z" and old.valid_until == "2026-11-26T17:00:00Z"
    assert old.acquired_at == "2026-11-26T12:00:00Z"
    assert r.events[-1] == "PrefixChanged"
    assert p.next_check == t1 + timedelta(hours=2)
    r.feed(None, t1 + timedelta(hours=2))
    assert r.history() == [(B, "active"), (A, "expired")] and r.events[-1] == "PrefixExpired"


def test_a_prefix_that_comes_back_is_not_listed_twice_and_gets_the_new_acquisition_time() -> None:
    r = Run()
    r.feed(report(1, entry(A)), T0)
    r.feed(report(2, entry(B), entry(A, "deprecated")), T0 + timedelta(hours=1))
    r.feed(report(3, entry(A), entry(B, "deprecated")), T0 + timedelta(hours=2))
    assert r.history() == [(A, "active"), (B, "draining")]
    assert r.status.history[0].acquired_at == "2026-11-26T14:00:00Z"
    assert r.status.history[0].deprecated_at is None


def test_history_is_pruned_past_max_prefix_history() -> None:
    r = Run(spec(transition={"maxPrefixHistory": 2}))
    for i, (cur, t) in enumerate([(A, 0), (B, 1), (C, 2), (D, 3)], start=1):
        r.feed(report(i, entry(cur)), T0 + timedelta(hours=t))
    assert r.history() == [(D, "active"), (C, "draining"), (B, "draining")]
    assert "PrefixPruned" in r.events


def test_a_new_routerd_boot_with_a_lower_sequence_waits_for_the_grace_period() -> None:
    r = Run(policy=Policy(boot_grace=timedelta(minutes=15)))
    r.feed(report(1000, entry(A), boot="a" * 16), T0)
    p = r.feed(report(3, entry(B), boot="b" * 16), T0 + timedelta(minutes=1), heard=T0 + timedelta(minutes=1))
    assert p.rejected is not None and r.status.current_prefix == A
    assert r.cond("Degraded") == ("True", "SequenceRegressed")
    p = r.feed(
        report(4, entry(B), boot="b" * 16), T0 + timedelta(minutes=20), heard=T0 + timedelta(minutes=1)
    )
    assert p.rejected is None and r.status.current_prefix == B and "SequenceReset" in r.events
    assert r.cond("Degraded") == ("False", "AsExpected")
    assert r.status.source is not None and r.status.source.boot == "b" * 16


def with_fallback(seconds: int) -> DynamicPrefixSpec:
    """routerd's messages, and RAs on eth0 once routerd has been silent for ``seconds``."""
    return spec(acquisition={
        "routerd": {"router": "edge", "interface": "br-lan"},
        "routerAdvertisement": {"interface": "eth0", "enabled": True, "fallbackAfterSeconds": seconds},
    })  # fmt: skip


def test_ra_fallback_only_when_routerd_is_quiet() -> None:
    r = Run(with_fallback(600))
    r.feed(report(1, entry(A)), T0)
    p = r.feed(report(0, entry(B), kind="router-advertisement"), T0 + timedelta(minutes=5), heard=T0)
    assert (
        p.rejected is not None
        and p.rejected.kind is Refusal.FALLBACK_NOT_DUE
        and r.status.current_prefix == A
    )
    p = r.feed(report(0, entry(B), kind="router-advertisement"), T0 + timedelta(minutes=11), heard=T0)
    assert (
        p.rejected is None
        and r.status.current_prefix == B
        and r.status.prefix_source == "router-advertisement"
    )


def test_no_preferred_prefix_keeps_the_old_one_draining() -> None:
    r = Run()
    r.feed(report(1, entry(A)), T0)
    r.feed(report(2, entry(A, "deprecated", valid=3000)), T0 + timedelta(minutes=1))
    assert r.status.current_prefix is None and r.history() == [(A, "draining")]
    assert r.cond("PrefixAcquired") == ("False", "NoPreferredPrefix") and "PrefixLost" in r.events


def test_ula_and_prefix_length_filters() -> None:
    r = Run()
    r.feed(report(1, entry("fd00:1::/64"), entry(A)), T0)
    assert r.status.current_prefix == A
    r = Run(policy=Policy(allow_ula=True))
    r.feed(report(1, entry("fd00:1::/64"), entry(A)), T0)
    assert r.status.current_prefix == "fd00:1::/64"
    r = Run(spec(acquisition={"routerd": {"router": "edge", "interface": "br-lan", "prefixLength": 56}},
                 addressRanges=[]))  # fmt: skip
    r.feed(report(1, entry(A), entry("2001:db8:100::/56")), T0)
    assert r.status.current_prefix == "2001:db8:100::/56"


def test_a_range_that_does_not_fit_the_prefix_is_reported() -> None:
    r = Run(spec(acquisition={"routerd": {"router": "edge", "interface": "wan"}},
                 addressRanges=[{"name": "lb", "start": "::1:0:0:0:1", "end": "::1:0:0:0:ff"}]))  # fmt: skip
    r.feed(report(1, entry("2001:db8:100::/64")), T0)
    status, reason = r.cond("Degraded")
    assert (status, reason) == ("True", "RangeOutsidePrefix")
    assert r.status.address_ranges == []


def test_subnets_are_carved_from_the_prefix() -> None:
    r = Run(spec(addressRanges=[], subnets=[{"name": "lan2", "offset": 2, "prefixLength": 64}]))
    r.feed(report(1, entry("2001:db8:100::/56")), T0)
    assert [(s.name, s.cidr) for s in r.status.subnets] == [("lan2", "2001:db8:100:2::/64")]


def test_dhcpv6pd_alone_says_how_to_get_a_prefix() -> None:
    r = Run(
        spec(acquisition={"dhcpv6pd": {"interface": "wan", "requestedPrefixLength": 56}}, addressRanges=[])
    )
    r.feed(None, T0)
    assert r.cond("Degraded") == ("True", "DHCPv6PDNotSupported")
    assert r.cond("PrefixAcquired") == ("False", "WaitingForPrefix")


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    r = Run()
    r.feed(report(1, entry(A)), T0)
    first = {c.type: c.last_transition_time for c in r.status.conditions}
    r.feed(report(2, entry(B), entry(A, "deprecated")), T0 + timedelta(hours=1))
    assert {c.type: c.last_transition_time for c in r.status.conditions} == first


def test_ready_is_derived_from_the_other_conditions() -> None:
    r = Run()
    r.feed(report(1, entry(A)), T0)
    assert r.cond("Ready") == ("False", "Pending")  # the targets were not synced yet
    synced = with_condition(r.status, T0, 1, "PoolsSynced", True, "Synced", "")
    synced = with_condition(synced, T0, 1, "ServicesSynced", True, "SimpleMode", "")
    ready = next(c for c in synced.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "Ready")
    broken = with_condition(synced, T0, 1, "PoolsSynced", False, "PoolProblems", "pool p: refused")
    ready = next(c for c in broken.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "PoolProblems",
        "PoolsSynced is False: pool p: refused",
    )


prefixes = st.sampled_from([A, B, C, D, "fd00:1::/64"])
states = st.sampled_from(["preferred", "deprecated", "withdrawn"])
lifetimes = st.one_of(st.none(), st.integers(1, 200000))


@st.composite
def reports(draw: st.DrawFn) -> list[tuple[dict[str, Any], ...]]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        chosen = draw(st.lists(prefixes, unique=True, max_size=4))
        out.append(tuple(entry(p, draw(states), valid=draw(lifetimes)) for p in chosen))
    return out


@settings(max_examples=200, deadline=None)  # a property, not a timing: a loaded CI machine must not fail it
@given(reports(), st.lists(st.integers(0, 20000), min_size=12, max_size=12), st.integers(1, 10))
def test_any_sequence_of_reports_yields_a_valid_status(
    steps: list[tuple[dict[str, Any], ...]], gaps: list[int], keep: int
) -> None:
    r = Run(spec(transition={"maxPrefixHistory": keep}))
    now = T0
    for i, prefixes_ in enumerate(steps):
        now += timedelta(seconds=gaps[i])
        r.feed(report(i + 1, *prefixes_), now)
        s = r.status
        DynamicPrefixStatus.model_validate(s.dump())  # what we write is what we can read back
        names = [h.prefix for h in s.history]
        assert len(names) == len(set(names)) and len(names) <= keep + 1
        assert not set(s.pruned) & set(names), "a pruned prefix came back into the history"
        assert sum(h.state == "active" for h in s.history) == (1 if s.current_prefix else 0)
        assert s.current_prefix is None or s.history[0].prefix == s.current_prefix
        again = plan(r.spec, s, None, now, 1, r.policy)
        assert again.status == s, "planning again with nothing new must not change the status"


def test_an_old_prefix_never_seen_as_current_still_drains() -> None:
    r = Run()
    r.feed(report(1, entry(B), entry(A, "deprecated", valid=7200), entry(C, "withdrawn", valid=0)), T0)
    assert r.history() == [(B, "active"), (A, "draining")]
    assert r.status.history[1].valid_until == "2026-11-26T14:00:00Z"


# -- regressions of issue 12 ----------------------------------------------------------------------

E, F = "2001:db8:e::/64", "2001:db8:f::/64"


def renumbered(seq: int, order: list[str], valid: int = 7200) -> Report:
    """The newest prefix preferred; every older one still listed with lifetimes 0 (RFC 9096), which
    routerd reports as withdrawn with what the two-hour rule leaves (RFC 4862 §5.5.3 e)."""
    return report(seq, entry(order[-1]), *(entry(p, "withdrawn", valid=valid) for p in reversed(order[:-1])))


def test_a_pruned_prefix_stays_pruned_while_the_router_keeps_listing_it() -> None:
    """Six renumberings with maxPrefixHistory 2: each changes the status once, a heartbeat after
    it changes nothing, each old prefix is pruned exactly once, and a prefix pruned earlier
    never comes back to push a newer, still valid one out."""
    r = Run(spec(transition={"maxPrefixHistory": 2}))
    order: list[str] = []
    seq = 0
    for step, p in enumerate([A, B, C, D, E, F]):
        order.append(p)
        now = T0 + timedelta(minutes=10 * step)
        before = r.status
        seq += 1
        r.feed(renumbered(seq, order), now)
        assert r.status != before
        want = [(p, "active"), *[(q, "draining") for q in reversed(order[:-1])][:2]]
        assert r.history() == want, f"after {p}"
        for later in (1, 2):  # heartbeats: the same state, a little older
            after = r.status
            seq += 1
            r.feed(renumbered(seq, order, valid=7200 - 60 * later), now + timedelta(minutes=later))
            assert r.status == after, f"a heartbeat after {p} changed the status: {r.history()}"
        # what is written must be enough after a restart: plan from the status read back
        r.status = DynamicPrefixStatus.model_validate(r.status.dump())
    assert r.events.count("PrefixPruned") == 3 and r.events.count("PrefixChanged") == 5
    assert sorted(r.status.pruned) == [A, B, C]


def test_a_pruned_prefix_is_forgotten_once_the_router_stops_listing_it() -> None:
    r = Run(spec(transition={"maxPrefixHistory": 1}))
    r.feed(renumbered(1, [A]), T0)
    r.feed(renumbered(2, [A, B]), T0 + timedelta(minutes=1))
    r.feed(renumbered(3, [A, B, C]), T0 + timedelta(minutes=2))
    assert r.history() == [(C, "active"), (B, "draining")] and r.status.pruned == [A]
    r.feed(report(4, entry(C), entry(B, "withdrawn", valid=7000)), T0 + timedelta(minutes=3))
    assert r.status.pruned == []
    r.feed(report(5, entry(D), entry(C, "withdrawn", valid=7000), entry(A, "withdrawn", valid=6000)),
           T0 + timedelta(minutes=4))  # fmt: skip
    assert r.history() == [(D, "active"), (C, "draining")] and r.status.pruned == [A]


def test_history_order_is_by_when_clusterd_saw_each_prefix_not_by_its_text() -> None:
    low, high = "2001:db8:1::/64", "2001:db8:ff::/64"
    # low was in use until now; high is listed for the first time, already withdrawn.
    r = Run(spec(transition={"maxPrefixHistory": 1}))
    r.feed(report(1, entry(low)), T0)
    r.feed(report(2, entry(B), entry(low, "withdrawn", valid=7200), entry(high, "withdrawn", valid=7200)),
           T0 + timedelta(hours=1))  # fmt: skip
    assert r.history() == [(B, "active"), (low, "draining")] and r.status.pruned == [high]
    # Seen together for the first time: the one with more valid lifetime left was withdrawn last.
    r = Run(spec(transition={"maxPrefixHistory": 1}))
    r.feed(report(1, entry(B), entry(high, "withdrawn", valid=3000), entry(low, "withdrawn", valid=7000)), T0)
    assert r.history() == [(B, "active"), (low, "draining")]


def test_routerd_order_is_kept_while_the_ra_fallback_supplies_the_prefix() -> None:
    """routerd seq 10 -> A; routerd goes silent and the RA fallback applies B; the broker re-delivers
    seq 10 when clusterd reconnects: it is refused and B stays, also after a restart."""
    r = Run(with_fallback(600))
    r.feed(report(10, entry(A)), T0)
    r.feed(report(1, entry(B), kind="router-advertisement"), T0 + timedelta(minutes=11), heard=T0)
    assert r.status.current_prefix == B and r.status.prefix_source == "router-advertisement"
    r.status = DynamicPrefixStatus.model_validate(r.status.dump())  # clusterd restarts
    for seq in (10, 9):
        p = r.feed(report(seq, entry(A)), T0 + timedelta(minutes=12))
        assert p.rejected is not None and p.rejected.kind is Refusal.NOT_NEWER, seq
        assert r.status.current_prefix == B
    p = r.feed(report(11, entry(C), entry(A, "deprecated")), T0 + timedelta(minutes=13))
    assert p.rejected is None and r.status.current_prefix == C and r.status.prefix_source == "routerd"
    assert r.status.source is not None and r.status.source.sequence == 11
    p = r.feed(report(11, entry(A)), T0 + timedelta(minutes=14))
    assert p.rejected is not None and r.status.current_prefix == C


def test_an_earlier_routerd_run_stays_refused_while_the_ra_fallback_is_in_use() -> None:
    r = Run(with_fallback(60))
    r.feed(report(5, entry(A), boot="a" * 16), T0)
    r.feed(report(6, entry(A), boot="b" * 16), T0 + timedelta(minutes=20))  # a new run (clock-seeded)
    r.feed(report(1, entry(B), kind="router-advertisement"), T0 + timedelta(minutes=40))
    assert r.status.current_prefix == B
    p = r.feed(report(7, entry(C), boot="a" * 16), T0 + timedelta(minutes=41))
    assert p.rejected is not None and p.rejected.kind is Refusal.EARLIER_BOOT and r.status.current_prefix == B


def test_history_takes_only_prefixes_of_routerd_prefix_length() -> None:
    """With prefixLength 64, a deprecated /56 in the message never enters the history (so no pool
    gains a block inside it)."""
    from clusterd.core.pools import LB_POOL, desired

    s = spec(acquisition={"routerd": {"router": "edge", "interface": "br-lan", "prefixLength": 64}})
    r = Run(s)
    r.feed(report(1, entry(A), entry("2001:db8:100::/56", "deprecated", valid=7200)), T0)
    slash56 = entry("2001:db8:200::/56", "withdrawn", valid=3600)
    r.feed(report(2, entry(B), entry(A, "deprecated", valid=7200), slash56), T0 + timedelta(hours=1))
    assert r.history() == [(B, "active"), (A, "draining")]
    blocks, problem = desired(LB_POOL, {"dynamic-prefix.io/address-range": "lb"}, s, r.status)
    assert problem is None
    assert [b["start"] for b in blocks] == ["2001:db8:b:0:f000::", "2001:db8:a:0:f000::"]


def test_a_refused_sequence_from_a_new_run_is_typed_not_matched_by_its_text() -> None:
    r = Run(policy=Policy(boot_grace=timedelta(minutes=15)))
    r.feed(report(1000, entry(A), boot="a" * 16), T0)
    p = r.feed(report(3, entry(B), boot="b" * 16), T0 + timedelta(minutes=1), heard=T0 + timedelta(minutes=1))
    assert p.rejected is not None and p.rejected.kind is Refusal.SEQUENCE_REGRESSED
    assert r.cond("Degraded") == ("True", "SequenceRegressed")
    c = next(c for c in r.status.conditions if c.type == "Degraded")
    assert c.message == p.rejected.message


# -- message age (a retained MQTT message) --------------------------------------------------------

RECEIVED = T0 + timedelta(hours=5)


def aged(*, retained: bool, expiry: int | None = None, observed: str = "x", valid: int = 7200) -> Report:
    base = report(1, entry(A, valid=valid), at=RECEIVED)
    state = base.state.model_copy(update={"observed_at": observed})
    return dataclasses.replace(base, state=state, retained=retained, expiry_interval=expiry)


def test_when_a_message_was_published() -> None:
    # A live message was published as it arrived.
    assert published_at(aged(retained=False, expiry=10)) == RECEIVED
    # A retained one, over MQTT 5: routerd set the expiry to the longest valid lifetime and the
    # broker counted it down while it kept the message.
    assert published_at(aged(retained=True, expiry=3600)) == RECEIVED - timedelta(hours=1)
    assert published_at(aged(retained=True, expiry=9000)) == RECEIVED  # never after it arrived
    # Without an expiry: observedAt, when the router's clock looks synced, never after arrival.
    assert published_at(aged(retained=True, observed="2026-11-26T14:30:00Z")) == T0 + timedelta(hours=2.5)
    assert published_at(aged(retained=True, observed="2026-11-26T19:00:00Z")) == RECEIVED
    assert published_at(aged(retained=True, observed="2000-01-01T00:02:10Z")) is None  # not synced
    assert published_at(aged(retained=True, observed="x")) is None


def test_lifetimes_of_a_retained_message_count_from_its_publication() -> None:
    r = Run()
    r.feed(aged(retained=True, expiry=3600), RECEIVED)
    assert r.status.lease_expires_at == "2026-11-26T18:00:00Z"  # published at 16:00 with 2 h left
    assert r.status.source is not None and r.status.source.received_at == "2026-11-26T16:00:00Z"
    r = Run()
    r.feed(aged(retained=True, observed="nonsense"), RECEIVED)  # no idea how old it is
    assert r.status.lease_expires_at == "2026-11-26T19:00:00Z"
    assert r.status.source is not None and r.status.source.received_at is None, "never heard from"


def test_an_old_routerd_message_does_not_take_over_from_the_ra_fallback() -> None:
    """RAs supply the prefix because routerd went silent; a retained message from before that (newer
    than the last one applied, but published an hour ago) does not mean routerd is back."""
    r = Run(with_fallback(600))
    r.feed(report(10, entry(A)), T0)
    now = T0 + timedelta(hours=2)
    r.feed(report(1, entry(B), kind="router-advertisement"), now, heard=T0)
    old = dataclasses.replace(report(11, entry(C, valid=7200), at=now), retained=True, expiry_interval=3600)
    p = r.feed(old, now)
    assert p.rejected is not None and p.rejected.kind is Refusal.TOO_OLD and r.status.current_prefix == B
    p = r.feed(dataclasses.replace(old, retained=True, expiry_interval=7190), now)  # published 10 s ago
    assert p.rejected is None and r.status.current_prefix == C
