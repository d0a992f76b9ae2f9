"""Pool planning (clusterd/core/pools.py), leader election (core/lease.py), webhook checks (core/auth.py)."""

from __future__ import annotations

import heapq
import json
from datetime import datetime, timedelta
from ipaddress import IPv6Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterd.core import auth, lease, pools
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from routerd.core.wire import sign

SPEC = DynamicPrefixSpec.model_validate({
    "acquisition": {"routerd": {"router": "edge", "interface": "br-lan"}},
    "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"},
                      {"name": "few", "start": "::3", "end": "::10"}],
    "subnets": [{"name": "lan2", "offset": 2, "prefixLength": 64}],
})  # fmt: skip


def status(*history: tuple[str, str]) -> DynamicPrefixStatus:
    return DynamicPrefixStatus.model_validate({
        "currentPrefix": next((p for p, s in history if s == "active"), None),
        "history": [{"prefix": p, "state": s, "acquiredAt": "2026-11-26T12:00:00Z"} for p, s in history],
    })  # fmt: skip


S = status(("2001:db8:b::/64", "active"), ("2001:db8:a::/64", "draining"), ("2001:db8:9::/64", "expired"))
ANN = {pools.NAME: "home", pools.RANGE: "lb"}


def test_blocks_for_the_current_and_draining_prefixes_as_start_stop() -> None:
    want, problem = pools.desired(pools.LB_POOL, ANN, SPEC, S)
    assert problem is None
    assert want == [
        {"start": "2001:db8:b:0:f000::", "stop": "2001:db8:b:0:ffff:ffff:ffff:ffff"},
        {"start": "2001:db8:a:0:f000::", "stop": "2001:db8:a:0:ffff:ffff:ffff:ffff"},
    ]


def test_cidr_groups_get_the_exact_cidr_set() -> None:
    want, _ = pools.desired(pools.CIDR_GROUP, {pools.NAME: "home", pools.RANGE: "few"}, SPEC, S)
    assert want[:4] == ["2001:db8:b::3/128", "2001:db8:b::4/126", "2001:db8:b::8/125", "2001:db8:b::10/128"]
    assert len(want) == 8


def test_subnet_and_whole_prefix() -> None:
    want, _ = pools.desired(pools.LB_POOL, {pools.NAME: "home", pools.SUBNET: "lan2"},
                            SPEC, status(("2001:db8:100::/56", "active")))  # fmt: skip
    assert want == [{"cidr": "2001:db8:100:2::/64"}]
    want, _ = pools.desired(pools.CIDR_GROUP, {pools.NAME: "home"}, SPEC, S)
    assert want == ["2001:db8:b::/64", "2001:db8:a::/64"]


def test_metallb_addresses_are_start_end_ranges_and_cidrs() -> None:
    """MetalLB's ``spec.addresses`` are strings: a range as ``start-end``, a subnet or prefix as a CIDR."""
    want, problem = pools.desired(pools.METALLB_POOL, ANN, SPEC, S)
    assert problem is None
    assert want == ["2001:db8:b:0:f000::-2001:db8:b:0:ffff:ffff:ffff:ffff",
                    "2001:db8:a:0:f000::-2001:db8:a:0:ffff:ffff:ffff:ffff"]  # fmt: skip
    want, _ = pools.desired(pools.METALLB_POOL, {pools.NAME: "home", pools.SUBNET: "lan2"},
                            SPEC, status(("2001:db8:100::/56", "active")))  # fmt: skip
    assert want == ["2001:db8:100:2::/64"]
    want, _ = pools.desired(pools.METALLB_POOL, {pools.NAME: "home"}, SPEC, S)
    assert want == ["2001:db8:b::/64", "2001:db8:a::/64"]


@pytest.mark.parametrize(
    ("ann", "fragment"),
    [
        ({pools.NAME: "home", pools.RANGE: "nope"}, "address range 'nope' is not in the DynamicPrefix"),
        ({pools.NAME: "home", pools.SUBNET: "nope"}, "subnet 'nope'"),
        ({pools.NAME: "home", pools.RANGE: "lb", pools.SUBNET: "lan2"}, "not both"),
    ],
)
def test_problems(ann: dict[str, str], fragment: str) -> None:
    _, problem = pools.desired(pools.LB_POOL, ann, SPEC, S)
    assert problem is not None and fragment in problem


V4 = {"cidr": "192.0.2.0/24"}
OLD = {"start": "2001:db8:a::1", "stop": "2001:db8:a::ff"}
NEW = {"start": "2001:db8:b::1", "stop": "2001:db8:b::ff"}


def test_a_user_block_survives_and_nothing_is_written_when_nothing_changes() -> None:
    p = pools.plan([V4], {}, [OLD])
    assert p.writes == (pools.Write([V4, OLD], [OLD]),)
    ann = {pools.MANAGED: pools.managed_annotation([OLD]) or ""}
    assert pools.plan([V4, OLD], ann, [OLD]).writes == ()


def test_new_blocks_are_added_before_old_ones_are_removed() -> None:
    ann = {pools.MANAGED: json.dumps([OLD])}
    p = pools.plan([V4, OLD], ann, [NEW])
    assert p.writes == (pools.Write([V4, OLD, NEW], [OLD, NEW]), pools.Write([V4, NEW], [NEW]))
    # With no Service to write in between (simple mode), the final list goes in one write.
    assert p.final == pools.Write([V4, NEW], [NEW])
    assert pools.plan([V4], {}, [NEW]).final == pools.Write([V4, NEW], [NEW])


def test_blocks_are_removed_only_in_the_shrink_step_that_follows_the_services() -> None:
    # Cilium marks a Service requesting an address no pool holds IPAMRequestSatisfied=False no_pool
    # and never clears it: the controller writes `grow`, then the Services, then `shrink`.
    p = pools.plan([V4, OLD], {pools.MANAGED: json.dumps([OLD])}, [NEW])
    assert p.grow == pools.Write([V4, OLD, NEW], [OLD, NEW])
    assert p.shrink == pools.Write([V4, NEW], [NEW])
    only_removes = pools.plan([V4, NEW, OLD], {pools.MANAGED: json.dumps([NEW, OLD])}, [NEW])
    assert only_removes.grow is None and only_removes.shrink == pools.Write([V4, NEW], [NEW])
    only_adds = pools.plan([V4], {}, [NEW])
    assert only_adds.grow == pools.Write([V4, NEW], [NEW]) and only_adds.shrink is None


def test_first_and_last_of_a_cidr_block_are_reserved_only_when_the_pool_says_no() -> None:
    blocks = [{"cidr": "2001:db8:a::/64"}, {"start": "2001:db8:b::1", "stop": "2001:db8:b::ff"},
              {"cidr": "192.0.2.0/24"}, {"cidr": "2001:db8:c::/127"}]  # fmt: skip
    assert pools.reserved({"blocks": blocks, "allowFirstLastIPs": "No"}) == {
        IPv6Address("2001:db8:a::"), IPv6Address("2001:db8:a::ffff:ffff:ffff:ffff")}  # fmt: skip
    assert pools.reserved({"blocks": blocks, "allowFirstLastIPs": "Yes"}) == set()
    assert pools.reserved({"blocks": blocks}) == set()


def test_a_managed_block_edited_by_hand_becomes_the_users_and_ours_is_restored() -> None:
    edited = {"start": "2001:db8:a::1", "stop": "2001:db8:a::80"}
    p = pools.plan([V4, edited], {pools.MANAGED: json.dumps([OLD])}, [OLD])
    assert p.writes[-1] == pools.Write([V4, edited, OLD], [OLD])


def test_releasing_a_pool_takes_back_only_our_entries() -> None:
    p = pools.plan([V4, OLD], {pools.MANAGED: json.dumps([OLD])}, None)
    assert p.writes == (pools.Write([V4], None),)
    assert pools.plan([V4], {}, None).writes == ()


def test_an_unreadable_record_owns_nothing() -> None:
    p = pools.plan([V4, OLD], {pools.MANAGED: "{not json"}, [NEW])
    assert p.writes[-1] == pools.Write([V4, OLD, NEW], [NEW])


entries = st.sampled_from([V4, OLD, NEW, {"cidr": "2001:db8:c::/64"}, {"cidr": "198.51.100.0/24"}])


@given(st.lists(entries, unique_by=json.dumps), st.lists(entries, unique_by=json.dumps),
       st.lists(entries, unique_by=json.dumps) | st.none())  # fmt: skip
def test_pool_plans_keep_user_entries_and_converge(
    current: list[Any], mine: list[Any], want: list[Any] | None
) -> None:
    mine = [e for e in mine if e in current]
    ann = {pools.MANAGED: json.dumps(mine)} if mine else {}
    p = pools.plan(current, ann, want)
    users = [e for e in current if e not in mine]
    for w in p.writes:
        assert all(u in w.entries for u in users), "a user entry was dropped"
    if p.writes:
        last = p.writes[-1]
        assert set(map(json.dumps, last.entries)) == set(map(json.dumps, users + (want or [])))
        again = pools.plan(last.entries, {pools.MANAGED: json.dumps(last.managed)} if last.managed is not None else {},
                           want)  # fmt: skip
        assert again.writes == ()
        if len(p.writes) == 2:  # add first: the intermediate write only grows the list
            assert all(e in p.writes[0].entries for e in current)


WALL = datetime(2026, 11, 26, 12, 0, 0)
T = lease.Timing(duration=15, renew_deadline=10, retry=2)
DAY = timedelta(days=1)


def rec(holder: str | None, renewed: datetime = WALL, duration: int = 15, n: int = 0) -> lease.LeaseRecord:
    return lease.LeaseRecord(holder, WALL, renewed, duration, n)


def seen(record: lease.LeaseRecord | None, since: float, renewed: float | None = None) -> lease.Seen:
    return lease.Seen(record, since, renewed)


NEVER = lease.Seen()
# What this replica saw before, the record it reads now, its monotonic now -> what it writes, when it looks
# again. The reader's wall clock is WALL throughout; the renewTimes in the records are other replicas' clocks.
DECISIONS = [
    pytest.param(NEVER, None, 100.0, rec("me"), 2, id="no Lease: create it"),
    pytest.param(NEVER, rec(None, n=3), 100.0, rec("me", n=4), 2, id="released: take it at once"),
    pytest.param(seen(rec("me"), 90.0, 90.0), rec("me"), 100.0, rec("me"), 2, id="mine: renew"),
    pytest.param(NEVER, rec("other"), 100.0, None, 2, id="first sight: wait a whole duration"),
    pytest.param(NEVER, rec("other", WALL - DAY), 100.0, None, 2, id="holder's clock a day behind: still wait"),
    pytest.param(seen(rec("other"), 86.0), rec("other"), 100.0, None, 1, id="unchanged 14 of 15 s: look at 15"),
    pytest.param(seen(rec("other"), 85.0), rec("other"), 100.0, rec("me", n=1), 2, id="unchanged 15 s: take over"),
    pytest.param(seen(rec("other", WALL + DAY), 85.0), rec("other", WALL + DAY), 100.0, rec("me", n=1), 2,
                 id="holder's clock a day ahead: take over on time"),
    pytest.param(seen(rec("other"), 10.0), rec("other", WALL + timedelta(seconds=2)), 100.0, None, 2,
                 id="renewed: the wait starts again"),
    pytest.param(seen(rec("other", duration=60), 50.0), rec("other", duration=60), 100.0, None, 2,
                 id="the holder's leaseDurationSeconds counts, not ours"),
]  # fmt: skip


@pytest.mark.parametrize(("before", "record", "now", "write", "retry_in"), DECISIONS)
def test_lease_decisions_time_the_record_by_the_readers_own_clock(
    before: lease.Seen, record: lease.LeaseRecord | None, now: float, write: lease.LeaseRecord | None,
    retry_in: float
) -> None:  # fmt: skip
    d = lease.decide(before, record, "me", now, WALL, T)
    assert d.write == write and d.retry_in == retry_in
    assert d.seen.record == record
    assert d.seen.since == (before.since if record == before.record else now)


MINE = lease.written(rec("me"), 100.0)
LEADING = [
    pytest.param(MINE, 100.0, True, id="just renewed"),
    pytest.param(MINE, 109.9, True, id="inside the renew deadline"),
    pytest.param(MINE, 110.0, False, id="renew deadline passed: step down"),
    pytest.param(lease.lost(MINE), 100.5, False, id="409: another wrote"),
    pytest.param(lease.written(rec("other"), 100.0), 100.0, False, id="someone else's record"),
    pytest.param(seen(rec("me"), 100.0), 100.0, False, id="mine on paper, but not written by this run"),
]


@pytest.mark.parametrize(("after", "now", "leads"), LEADING)
def test_leading_means_renewed_within_the_renew_deadline(after: lease.Seen, now: float, leads: bool) -> None:
    assert lease.leading(after, "me", now, T) is leads


def test_lease_release_hands_it_back_only_from_the_holder() -> None:
    released = lease.release(rec("a", n=2), "a")
    assert released is not None and released.holder is None and released.transitions == 2
    assert lease.decide(NEVER, released, "b", 0.0, WALL, T).write == rec("b", n=3)
    assert lease.release(rec("a"), "b") is None


pause = st.sampled_from([0.0, 0.1, 0.5, 1.0]) | st.floats(0.0, 1.0)  # ties and near-ties are where races hide


@given(
    replicas=st.lists(st.tuples(st.integers(-2 * 86400, 2 * 86400), st.floats(0.0, 20.0)), min_size=2, max_size=3),
    draws=st.lists(st.tuples(pause, pause, st.sampled_from("oooo-+")), min_size=1, max_size=120),
)  # fmt: skip
def test_replicas_with_any_clock_offsets_never_lead_at_once(
    replicas: list[tuple[int, float]], draws: list[tuple[float, float, str]]
) -> None:
    """A simulation: replicas whose clocks are days apart run the core against one Lease.

    Each replica (clock offset, start time) looks at the Lease when the core says, plus a
    ``jitter``; a write the core asks for lands ``delay`` seconds later, refused if anyone
    wrote in between (a stale resourceVersion). Its fate: ``o`` answered; ``-`` lost on the
    way, ``+`` applied but the answer lost — after either the replica is cut off for good,
    still believing what it last knew. Clocks run at one rate; wall and monotonic clocks have
    per-replica offsets. Whenever a write lands (the only moment anyone starts leading), no
    other replica may still think it leads.
    """
    n = len(replicas)
    state = [lease.Seen() for _ in range(n)]
    store: lease.LeaseRecord | None = None
    version = 0
    events = [(start, i, "look", None) for i, (_, start) in enumerate(replicas)]
    heapq.heapify(events)
    draw = iter(draws)
    t = 0.0  # true time

    def mono(i: int) -> float:
        return t + 1000.0 * replicas[i][0]  # monotonic clocks with their own origins

    while events:
        t, i, kind, pending = heapq.heappop(events)
        if (d := next(draw, None)) is None:
            break
        jitter, delay, fate = d
        if kind == "look":
            got = lease.decide(
                state[i], store, str(i), mono(i), WALL + timedelta(seconds=replicas[i][0] + t), T
            )
            state[i] = got.seen
            if got.write is None:
                heapq.heappush(events, (t + got.retry_in + jitter, i, "look", None))
            else:
                heapq.heappush(
                    events, (t + delay, i, "land", (got.write, version, mono(i), fate, got.retry_in))
                )
            continue
        record, read, sent, fate, retry_in = pending
        landed = fate != "-" and read == version
        if landed:
            store, version = record, version + 1
            others = [j for j in range(n) if j != i and lease.leading(state[j], str(j), mono(j), T)]
            assert not others, f"replica {i} wrote the Lease at {t:.2f} s while {others} still lead"
        if fate == "o":
            state[i] = lease.written(store, sent) if landed else lease.lost(state[i])
            heapq.heappush(events, (t + retry_in + jitter, i, "look", None))


SECRET = b"k" * 32


def signed(body: bytes, ts: int, secret: bytes = SECRET) -> tuple[str, str]:
    return str(ts), sign(secret, str(ts), body)


def test_webhook_auth_accepts_signed_fresh_new_requests() -> None:
    cache = auth.ReplayCache(window=300)
    ts, sig = signed(b"{}", 1000)
    auth.verify([b"old", SECRET], ts, sig, b"{}", 1010, 300, cache)
    with pytest.raises(auth.AuthError) as err:
        auth.verify([SECRET], ts, sig, b"{}", 1011, 300, cache)
    assert err.value.status == 409 and "replayed" in str(err.value)


@pytest.mark.parametrize(
    ("ts", "sig", "body", "now", "status", "fragment"),
    [
        (None, "x", b"{}", 1000, 401, "missing"),
        ("soon", "sha256=00", b"{}", 1000, 400, "not Unix seconds"),
        ("1000", sign(b"wrong", "1000", b"{}"), b"{}", 1000, 401, "bad signature"),
        ("1000", sign(SECRET, "1000", b"{}"), b'{"x":1}', 1000, 401, "bad signature"),
        ("1000", sign(SECRET, "1000", b"{}"), b"{}", 1400, 401, "check NTP"),
        ("1400", sign(SECRET, "1400", b"{}"), b"{}", 1000, 401, "check NTP"),
    ],
)
def test_webhook_auth_refusals(
    ts: str | None, sig: str, body: bytes, now: int, status: int, fragment: str
) -> None:
    with pytest.raises(auth.AuthError) as err:
        auth.verify([SECRET], ts, sig, body, now, 300, auth.ReplayCache(window=300))
    assert err.value.status == status and fragment in str(err.value)


def test_the_replay_cache_forgets_after_the_window_and_is_bounded() -> None:
    cache = auth.ReplayCache(window=10, capacity=3)
    assert cache.check_and_add("a", 0)
    assert not cache.check_and_add("a", 5)
    assert cache.check_and_add("a", 11)
    for s in "bcdef":
        cache.check_and_add(s, 12)
    assert len(cache._seen) <= 3
