"""Pool planning (clusterd/core/pools.py), leader election (core/lease.py), webhook checks (core/auth.py)."""

from __future__ import annotations

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


NOW = datetime(2026, 11, 26, 12, 0, 0)
D, R = timedelta(seconds=15), timedelta(seconds=2)


def test_lease_acquire_renew_follow_take_over_release() -> None:
    first = lease.decide(None, "a", NOW, D, R)
    assert first.leader and first.write is not None and first.write.holder == "a"
    held = first.write
    assert lease.decide(held, "a", NOW + R, D, R).write.renewed == NOW + R  # type: ignore[union-attr]
    follower = lease.decide(held, "b", NOW + R, D, R)
    assert not follower.leader and follower.write is None and follower.retry_at == NOW + 2 * R
    takeover = lease.decide(held, "b", NOW + D, D, R)
    assert takeover.leader and takeover.write is not None and takeover.write.transitions == 1
    released = lease.release(held, "a")
    assert released is not None and released.holder is None
    assert lease.decide(released, "b", NOW + R, D, R).leader
    assert lease.release(held, "b") is None


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
