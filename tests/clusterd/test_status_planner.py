"""The status planner (clusterd/core/status.py), on virtual time.

History without duplicates and with the right acquiredAt, draining until the
valid lifetime ends, pruning past maxPrefixHistory, sequence order across
routerd restarts, RA fallback rules, conditions, events; and properties: any
sequence of reports yields a valid status, and a repeated plan is a no-op.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterd.core.status import Policy, Report, plan
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
    assert p.rejected is not None and "not newer" in p.rejected and r.status == before
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


def test_ra_fallback_only_when_routerd_is_quiet() -> None:
    s = spec(
        acquisition={
            "routerd": {"router": "edge", "interface": "br-lan"},
            "routerAdvertisement": {"interface": "eth0", "enabled": True, "fallbackAfterSeconds": 600},
        }
    )
    r = Run(s)
    r.feed(report(1, entry(A)), T0)
    p = r.feed(report(0, entry(B), kind="router-advertisement"), T0 + timedelta(minutes=5), heard=T0)
    assert p.rejected is not None and "fallback" in p.rejected and r.status.current_prefix == A
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


@settings(max_examples=200)
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
        assert sum(h.state == "active" for h in s.history) == (1 if s.current_prefix else 0)
        assert s.current_prefix is None or s.history[0].prefix == s.current_prefix
        again = plan(r.spec, s, None, now, 1, r.policy)
        assert again.status == s, "planning again with nothing new must not change the status"


def test_an_old_prefix_never_seen_as_current_still_drains() -> None:
    r = Run()
    r.feed(report(1, entry(B), entry(A, "deprecated", valid=7200), entry(C, "withdrawn", valid=0)), T0)
    assert r.history() == [(B, "active"), (A, "draining")]
    assert r.status.history[1].valid_until == "2026-11-26T14:00:00Z"
