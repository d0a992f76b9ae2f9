"""Fuzzing the pure core harder than the unit tests do, and the named regressions it found.

Properties: the RA parser parses or raises its own error and round-trips;
the wire model round-trips and refuses what it cannot read with its own
error; the range arithmetic's CIDR sets are exact; no sequence of
observations makes the tracker publish an invalid state or a deadline in the
past; no sequence of reports makes the status planner produce an invalid or
unstable status. Example counts are set so the module runs in about a minute.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterd.core.status import Report, plan
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from routerd.core import ra, ranges, rtnetlink, wire
from routerd.core.emitter import message
from routerd.core.tracker import RAObserved, Tracker
from tests.clusterd.test_status_planner import entry
from tests.routerd.test_ra import advertisements
from tests.routerd.test_tracker import IF, observations
from tests.routerd.test_wire import good

MANY = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MANY
@given(st.binary(max_size=2000))
def test_ra_bytes_parse_or_raise_our_error(data: bytes) -> None:
    with contextlib.suppress(ra.RAParseError):
        ra.parse(data)


@MANY
@given(st.binary(min_size=16, max_size=600).map(lambda b: b"\x86\x00" + b[2:]))
def test_ra_shaped_bytes_parse_or_raise_our_error(data: bytes) -> None:
    with contextlib.suppress(ra.RAParseError):
        ra.parse(data)


@MANY
@given(advertisements)
def test_ra_round_trip(adv: ra.RouterAdvertisement) -> None:
    assert ra.parse(adv.pack()) == adv


@MANY
@given(st.binary(max_size=300))
def test_netlink_bytes_decode_or_raise_our_error(data: bytes) -> None:
    for decode in (rtnetlink.decode_address, rtnetlink.decode_link, rtnetlink.decode_prefix):
        with contextlib.suppress(rtnetlink.NetlinkError):
            decode(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=16), c, max_size=8),
    max_leaves=40,
)


@MANY
@given(json_values)
def test_any_json_validates_or_raises_the_wire_error(doc: object) -> None:
    with contextlib.suppress(wire.WireError):
        wire.decode(json.dumps(doc))


@MANY
@given(st.dictionaries(st.sampled_from(list(good())), json_values, max_size=5))
def test_near_miss_messages_validate_or_raise_the_wire_error(over: dict[str, Any]) -> None:
    try:
        msg = wire.decode(json.dumps(good(**over)))
    except wire.WireError:
        return
    assert wire.decode(msg.to_json()) == msg  # what validates, round-trips


suffix64 = st.integers(0, 2**64 - 1).map(IPv6Address)


@MANY
@given(suffix64, suffix64, st.integers(16, 64))
def test_range_cidr_sets_are_exact(a: IPv6Address, b: IPv6Address, plen: int) -> None:
    prefix = IPv6Network(("2001:db8::", plen), strict=False)
    host = (1 << (128 - plen)) - 1
    start, end = IPv6Address(min(int(a), int(b)) & host), IPv6Address(max(int(a), int(b)) & host)
    if start > end:
        start, end = end, start
    placed = ranges.place_range(prefix, start, end)
    covered = sum(c.num_addresses for c in placed.cidrs)
    assert covered == int(placed.end) - int(placed.start) + 1
    assert all(placed.start <= c.network_address and c.broadcast_address <= placed.end for c in placed.cidrs)


@SOME
@given(st.lists(st.tuples(observations, st.floats(0, 20000, allow_nan=False)), max_size=60))
def test_tracker_never_publishes_an_invalid_state(steps: list[tuple[Any, float]]) -> None:
    t = Tracker()
    now = 0.0
    for i, (obs, dt) in enumerate(steps):
        now += dt
        t.observe(obs, now)
        t.tick(now)
        message(router="r", interface=IF, boot="0" * 16, sequence=i, observed_at="x", views=t.view(IF, now))
        deadline = t.next_deadline(now)
        assert deadline is None or deadline > now


SPEC = DynamicPrefixSpec.model_validate({
    "acquisition": {"routerd": {"router": "edge", "interface": "br-lan"}},
    "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
    "transition": {"mode": "ha", "maxPrefixHistory": 3},
})  # fmt: skip
T0 = datetime(2026, 11, 26, 12, 0, 0)
prefix_names = st.sampled_from([f"2001:db8:{i:x}::/64" for i in range(6)] + ["fd00::/64", "2001:db8::/56"])


@st.composite
def reports(draw: st.DrawFn) -> list[tuple[int, int, int, list[dict[str, Any]]]]:
    steps = []
    for _ in range(draw(st.integers(1, 20))):
        seq = draw(st.integers(0, 30))
        boot = draw(st.integers(0, 2))
        gap = draw(st.integers(0, 20000))
        chosen = draw(st.lists(prefix_names, unique=True, max_size=4))
        states = st.sampled_from(["preferred", "deprecated", "withdrawn"])
        lifetimes = st.none() | st.integers(1, 100000)
        steps.append((seq, boot, gap, [entry(p, draw(states), valid=draw(lifetimes)) for p in chosen]))
    return steps


@SOME
@given(reports())
def test_the_status_planner_stays_valid_stable_and_ordered(
    steps: list[tuple[int, int, int, list[Any]]],
) -> None:
    status = DynamicPrefixStatus()
    now = T0
    recorded: dict[str | None, int] = {}
    for seq, boot, gap, prefixes in steps:
        now += timedelta(seconds=gap)
        doc = {"router": "edge", "interface": "br-lan", "boot": f"{boot:016x}", "sequence": seq,
               "observedAt": "x", "prefixes": prefixes}  # fmt: skip
        report = Report("routerd", "mqtt", wire.PrefixState.model_validate(doc), now)
        status = plan(SPEC, status, report, now, 1).status
        DynamicPrefixStatus.model_validate(status.dump())
        assert plan(SPEC, status, None, now, 1).status == status, "planning again with nothing new changed it"
        names = [h.prefix for h in status.history]
        assert len(names) == len(set(names)) <= SPEC.transition.max_prefix_history + 1
        src = status.source
        if src is not None and src.sequence is not None:
            # Within one routerd run the sequence the status records never goes back, and a run
            # that was replaced is never applied again.
            assert src.sequence >= recorded.get(src.boot, -1)
            assert src.boot not in src.previous_boots
            recorded[src.boot] = src.sequence


# -- named regressions: each was a failure one of the properties found --------------------------


def test_regression_tracker_deadline_in_the_past_would_spin_the_daemon() -> None:
    """Found by the tracker property: next_deadline() returned a deadline already passed
    (a delegation with preferred lifetime 0), so routerd's timer would fire in a loop."""
    from routerd.core.tracker import Delegated

    t = Tracker()
    t.observe(Delegated(IF, ((IPv6Network("2001:db8:a::/64"), ra.INFINITE, 0),)), 0.0)
    t.observe(RAObserved(IF, IPv6Address("fe80::1"), ra.RouterPreference.MEDIUM, ()), 1.0)
    assert t.next_deadline(1.0) is None or t.next_deadline(1.0) > 1.0  # type: ignore[operator]


def test_regression_half_a_second_left_read_as_deprecated_with_valid_lifetime_zero() -> None:
    """Found by the tracker property: 0.5 s of valid lifetime rounded down to 0 while the
    state still said deprecated, a combination the wire model refuses."""
    from routerd.core.tracker import AddressRemoved, InterfaceRemoved

    t = Tracker()
    t.observe(RAObserved(IF, IPv6Address("fe80::1"), ra.RouterPreference.MEDIUM, ()), 0.0)
    t.observe(InterfaceRemoved(IF), 0.0)
    pios = (ra.PrefixInformation(IPv6Network("2001:db8:a::/64"), 0, 0),
            ra.PrefixInformation(IPv6Network("2001:db8:a::/64"), 0, 0),
            ra.PrefixInformation(IPv6Network("2001:db8:a::/64"), 1, 0))  # fmt: skip
    t.observe(RAObserved(IF, IPv6Address("fe80::1"), ra.RouterPreference.MEDIUM, pios), 0.0)
    from ipaddress import IPv6Interface

    t.observe(AddressRemoved(IF, IPv6Interface("2001:db8:a::5/64")), 0.5)
    views = t.view(IF, 0.5)
    message(router="r", interface=IF, boot="0" * 16, sequence=1, observed_at="x", views=views)
    assert views[0].valid == 1


def test_regression_a_rejected_new_run_flapped_the_degraded_condition() -> None:
    """Found by the planner property: after a new routerd run's lower sequence was refused,
    the next plan without a message cleared Degraded again (a write per reconcile)."""
    status = DynamicPrefixStatus()
    for boot in (0, 1):
        doc = {"router": "edge", "interface": "br-lan", "boot": f"{boot:016x}", "sequence": 0,
               "observedAt": "x", "prefixes": []}  # fmt: skip
        status = plan(
            SPEC, status, Report("routerd", "mqtt", wire.PrefixState.model_validate(doc), T0), T0, 1
        ).status
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert degraded.reason == "SequenceRegressed"
    assert plan(SPEC, status, None, T0, 1).status == status


def test_regression_a_replaced_routerd_run_was_accepted_again_after_the_grace_period() -> None:
    """Found by the planner property: boot 0 was replaced by boot 1; fifteen minutes later a
    late message from boot 0 passed as "a restart that lost its state". Earlier boots are
    now remembered in status.source.previousBoots and always refused."""
    status = DynamicPrefixStatus()
    now = T0
    for seq, boot, gap in ((1, 0, 0), (2, 1, 0), (0, 0, 900)):
        now += timedelta(seconds=gap)
        doc = {"router": "edge", "interface": "br-lan", "boot": f"{boot:016x}", "sequence": seq,
               "observedAt": "x", "prefixes": []}  # fmt: skip
        p = plan(SPEC, status, Report("routerd", "mqtt", wire.PrefixState.model_validate(doc), now), now, 1)
        status = p.status
    assert p.rejected is not None and "earlier routerd run" in p.rejected.message
    assert status.source is not None and status.source.boot == f"{1:016x}"
