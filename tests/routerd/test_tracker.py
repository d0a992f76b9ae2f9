"""The prefix tracker (routerd/core/tracker.py), on virtual time.

Covers the state table, RFC 4862 §5.5.3 (preferred > valid, the two-hour
rule), the PIO flags (RFC 4861 §6.3.4 on-link prefixes, RFC 9762), RFC 9096
renumbering, expiry, filters, several routers on one link, lingering
prefixes, addresses and delegations, and a property: no sequence of
observations yields a state the wire model would refuse.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Interface, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerd.core import ra
from routerd.core.emitter import message
from routerd.core.tracker import (
    AddressObserved,
    AddressRemoved,
    Change,
    Delegated,
    InterfaceRemoved,
    KernelPrefixObserved,
    Observation,
    RAObserved,
    Tier,
    Tracker,
    TrackerConfig,
)
from routerd.core.wire import PrefixStatus, SourceKind

A = IPv6Network("2001:db8:a::/64")
B = IPv6Network("2001:db8:b::/64")
R1 = IPv6Address("fe80::1")
R2 = IPv6Address("fe80::2")
IF = "eth0"


def pio(
    prefix: IPv6Network, valid: int, preferred: int, on_link: bool = True, autonomous: bool = True
) -> ra.PrefixInformation:
    return ra.PrefixInformation(prefix, valid, preferred, on_link=on_link, autonomous=autonomous)


def adv(
    *pios: ra.PrefixInformation,
    router: IPv6Address = R1,
    pref: ra.RouterPreference = ra.RouterPreference.MEDIUM,
) -> RAObserved:
    return RAObserved(IF, router, pref, pios)


def states(t: Tracker, now: float) -> list[tuple[IPv6Network, PrefixStatus]]:
    return [(v.prefix, v.state) for v in t.view(IF, now)]


def test_a_new_prefix_appears_preferred_with_remaining_lifetimes() -> None:
    t = Tracker()
    up = t.observe(adv(pio(A, 3600, 1800)), now=100.0)
    assert up.changed == {IF}
    assert up.changes == ((IF, A, Change.APPEARED),)
    (v,) = t.view(IF, now=160.0)
    assert (v.state, v.valid, v.preferred) == (PrefixStatus.PREFERRED, 3540, 1740)
    assert v.sources == (SourceKind.RA,) and v.routers == (R1,)


def test_a_lifetime_refresh_changes_nothing() -> None:
    t = Tracker()
    t.observe(adv(pio(A, 3600, 1800)), 0.0)
    assert not t.observe(adv(pio(A, 3600, 1800)), 30.0).changed
    assert t.view(IF, 30.0)[0].valid == 3600


def test_preferred_lifetime_running_out_deprecates_then_valid_running_out_withdraws() -> None:
    t = Tracker(TrackerConfig(withdrawn_retention=60))
    t.observe(adv(pio(A, 100, 40)), 0.0)
    assert t.next_deadline(0.0) == 40.0
    assert not t.tick(39.0).changed
    up = t.tick(40.0)
    assert up.changes == ((IF, A, Change.DEPRECATED),)
    assert t.view(IF, 40.0)[0].preferred == 0
    up = t.tick(100.0)
    assert up.changes == ((IF, A, Change.WITHDRAWN),)
    assert t.view(IF, 100.0)[0].valid == 0
    assert t.next_deadline(100.0) == 160.0
    up = t.tick(160.0)
    assert up.changes == ((IF, A, Change.REMOVED),)
    assert t.view(IF, 160.0) == () and t.interfaces() == ()


def test_rfc9096_renumbering_old_withdrawn_new_preferred_and_both_listed() -> None:
    t = Tracker()
    t.observe(adv(pio(A, 86400, 14400)), 0.0)
    up = t.observe(adv(pio(A, 0, 0), pio(B, 86400, 14400)), 10.0)
    assert set(up.changes) == {(IF, A, Change.WITHDRAWN), (IF, B, Change.APPEARED)}
    assert states(t, 10.0) == [(B, PrefixStatus.PREFERRED), (A, PrefixStatus.WITHDRAWN)]
    # RFC 4862 §5.5.3 e: the unauthenticated "valid 0" cuts the remaining day to two hours.
    assert t.view(IF, 10.0)[1].valid == 7200


def test_two_hour_rule() -> None:
    t = Tracker()
    t.observe(adv(pio(A, 86400, 3600)), 0.0)
    t.observe(adv(pio(A, 60, 30)), 0.0)  # would cut a day to a minute: clamped to 2 h
    assert t.view(IF, 0.0)[0].valid == 7200
    t.observe(adv(pio(A, 60, 30)), 5400.0)  # remaining 1800 s <= 2 h: the received value is ignored
    assert t.view(IF, 5400.0)[0].valid == 1800
    t.observe(adv(pio(A, 10800, 3600)), 5400.0)  # more than 2 h: taken as is
    assert t.view(IF, 5400.0)[0].valid == 10800
    t.observe(adv(pio(A, ra.INFINITE, ra.INFINITE)), 5400.0)
    assert t.view(IF, 5400.0)[0].valid is None


# (L, A) -> valid lifetime left after a day, then 60 s, then 0 s at the same moment.
@pytest.mark.parametrize(
    ("on_link", "autonomous", "after_60", "after_0"),
    [
        (True, True, 7200, 7200),  # RFC 4862 §5.5.3 e: addresses from it live two more hours
        (False, True, 7200, 7200),
        (True, False, 60, 0),  # RFC 4861 §6.3.4: the on-link entry takes the lifetime as given
    ],
)
def test_the_two_hour_rule_holds_only_autonomous_prefixes(
    on_link: bool, autonomous: bool, after_60: int, after_0: int
) -> None:
    t = Tracker()
    t.observe(adv(pio(A, 86400, 3600, on_link, autonomous)), 0.0)
    t.observe(adv(pio(A, 60, 30, on_link, autonomous)), 10.0)
    assert (t.view(IF, 10.0)[0].valid, t.view(IF, 10.0)[0].state) == (after_60, PrefixStatus.PREFERRED)
    t.observe(adv(pio(A, 0, 0, on_link, autonomous)), 10.0)
    assert (t.view(IF, 10.0)[0].valid, t.view(IF, 10.0)[0].state) == (after_0, PrefixStatus.WITHDRAWN)


def test_an_on_link_only_pio_does_not_cut_what_autoconfiguration_holds() -> None:
    t = Tracker()
    t.observe(adv(pio(A, 86400, 3600)), 0.0)
    # A forged on-link-only "valid 0": RFC 4862 §5.5.3 b ignores it for the addresses made from A.
    t.observe(adv(pio(A, 0, 0, autonomous=False)), 10.0)
    (v,) = t.view(IF, 10.0)
    assert (v.state, v.valid) == (PrefixStatus.WITHDRAWN, 86390)


@pytest.mark.parametrize(
    "flags",
    [{}, {"pd_preferred": True}, {"router_address": True}],
    ids=["nothing", "P only (RFC 9762)", "R only"],
)
def test_a_pio_with_neither_l_nor_a_is_no_prefix_of_the_link(flags: dict[str, bool]) -> None:
    t = Tracker()
    neither = ra.PrefixInformation(A, 86400, 14400, on_link=False, autonomous=False, **flags)
    up = t.observe(adv(neither, pio(B, 86400, 14400)), 0.0)
    assert states(t, 0.0) == [(B, PrefixStatus.PREFERRED)]
    assert [i.reason for i in up.ignored] == ["neither-on-link-nor-autonomous"]
    up = t.observe(KernelPrefixObserved(IF, A, 86400, 14400, on_link=False, autonomous=False), 1.0)
    assert states(t, 1.0) == [(B, PrefixStatus.PREFERRED)] and not up.changed
    assert t.rejected["neither-on-link-nor-autonomous"] == 2


def test_a_voided_option_does_not_count_as_advertising_its_prefix() -> None:
    t = Tracker()
    t.observe(adv(pio(A, 3600, 1800), pio(B, 3600, 1800)), 0.0)
    for now in (1.0, 2.0):  # A's option is void (RFC 4862 §5.5.3 c): A is no longer advertised
        t.observe(adv(pio(A, 100, 200), pio(B, 3600, 1800)), now)
    assert [(v.prefix, v.tier) for v in t.view(IF, 2.0)] == [(B, Tier.ADVERTISED), (A, Tier.LINGERING)]


def test_valid_zero_for_an_unknown_prefix_is_ignored() -> None:
    t = Tracker()
    assert not t.observe(adv(pio(A, 0, 0)), 0.0).changed
    assert t.view(IF, 0.0) == ()


def test_preferred_beyond_valid_voids_the_option() -> None:
    t = Tracker()
    up = t.observe(adv(pio(A, 100, 200), pio(B, 100, 50)), 0.0)
    assert [i.reason for i in up.ignored] == ["preferred-exceeds-valid"]
    assert states(t, 0.0) == [(B, PrefixStatus.PREFERRED)]
    assert t.rejected["preferred-exceeds-valid"] == 1


@pytest.mark.parametrize(
    ("prefix", "reason", "config"),
    [
        ("fd00:1::/64", "ula-not-allowed", TrackerConfig()),
        ("fe80::/64", "not-global-unicast", TrackerConfig()),
        ("ff02::/64", "not-global-unicast", TrackerConfig()),
        ("2001:db8::/80", "prefix-too-long", TrackerConfig()),
        ("::/0", "default-route-prefix", TrackerConfig()),
        ("2001:db8::/60", "prefix-too-long", TrackerConfig(max_prefix_length=56)),
    ],
)
def test_filters(prefix: str, reason: str, config: TrackerConfig) -> None:
    t = Tracker(config)
    up = t.observe(adv(pio(IPv6Network(prefix), 100, 50)), 0.0)
    assert [i.reason for i in up.ignored] == [reason] and not up.changed


def test_ula_opt_in() -> None:
    t = Tracker(TrackerConfig(allow_ula=True))
    assert t.observe(adv(pio(IPv6Network("fd00:1::/64"), 100, 50)), 0.0).changed


def test_two_routers_same_prefix_longest_lifetime_wins_in_any_order() -> None:
    obs = [adv(pio(A, 3600, 1800), router=R1), adv(pio(A, 7200, 600), router=R2)]
    results = []
    for order in (obs, obs[::-1]):
        t = Tracker()
        for o in order:
            t.observe(o, 0.0)
        (v,) = t.view(IF, 0.0)
        results.append((v.valid, v.preferred, v.routers))
    assert results[0] == results[1] == (7200, 1800, (R1, R2))


def test_two_routers_different_prefixes_rank_by_preference_then_address() -> None:
    low = adv(pio(A, 3600, 1800), router=R1, pref=ra.RouterPreference.LOW)
    high = adv(pio(B, 3600, 1800), router=R2, pref=ra.RouterPreference.HIGH)
    for order in ([low, high], [high, low]):
        t = Tracker()
        for o in order:
            t.observe(o, 0.0)
        assert [v.prefix for v in t.view(IF, 0.0)] == [B, A]
    t = Tracker()
    t.observe(adv(pio(B, 3600, 1800), router=R2), 0.0)
    t.observe(adv(pio(A, 3600, 1800), router=R1), 0.0)
    assert [v.prefix for v in t.view(IF, 0.0)] == [A, B]


def test_a_prefix_the_router_stops_advertising_lingers_behind_the_new_one() -> None:
    t = Tracker()
    t.observe(adv(pio(A, 86400, 14400)), 0.0)  # the old prefix, which sorts first by address
    t.observe(adv(pio(B, 86400, 14400)), 1.0)  # a rebooted CE router advertises only the new one
    assert [v.prefix for v in t.view(IF, 1.0)] == [A, B]  # one RA may split its PIOs: not yet
    up = t.observe(adv(pio(B, 86400, 14400)), 2.0)
    assert up.changed == {IF}
    views = t.view(IF, 2.0)
    assert [(v.prefix, v.state, v.tier) for v in views] == [
        (B, PrefixStatus.PREFERRED, Tier.ADVERTISED),
        (A, PrefixStatus.PREFERRED, Tier.LINGERING),
    ]
    assert t.observe(adv(pio(A, 86400, 14400), pio(B, 86400, 14400)), 3.0).changed
    assert [v.prefix for v in t.view(IF, 3.0)] == [A, B]


def test_an_ra_without_prefixes_says_nothing_about_them() -> None:
    t = Tracker()
    t.observe(adv(pio(A, 3600, 1800)), 0.0)
    for now in (1.0, 2.0, 3.0):
        assert not t.observe(adv(), now).changed
    assert t.view(IF, 3.0)[0].tier is Tier.ADVERTISED


def test_addresses_from_netlink() -> None:
    t = Tracker(TrackerConfig(withdrawn_retention=0))
    addr = IPv6Interface("2001:db8:a::5/64")
    t.observe(AddressObserved(IF, addr, valid=3600, preferred=1800), 0.0)
    (v,) = t.view(IF, 0.0)
    assert (v.prefix, v.state, v.sources, v.tier) == (
        A,
        PrefixStatus.PREFERRED,
        (SourceKind.ADDRESS,),
        Tier.ADDRESS_ONLY,
    )
    up = t.observe(AddressObserved(IF, addr, valid=3600, preferred=1800, deprecated=True), 1.0)
    assert up.changes == ((IF, A, Change.DEPRECATED),)
    up = t.observe(AddressRemoved(IF, addr), 2.0)
    assert up.changes == ((IF, A, Change.REMOVED),)


def test_static_addresses_are_not_dynamic_prefixes_unless_asked() -> None:
    obs = AddressObserved(IF, IPv6Interface("2001:db8:a::5/64"), ra.INFINITE, ra.INFINITE, permanent=True)
    assert not Tracker().observe(obs, 0.0).changed
    assert Tracker(TrackerConfig(include_static=True)).observe(obs, 0.0).changed


def test_an_address_alone_does_not_outrank_what_the_router_advertises() -> None:
    t = Tracker()
    t.observe(AddressObserved(IF, IPv6Interface("2001:db8:a::5/64"), 3600, 1800), 0.0)
    t.observe(adv(pio(B, 86400, 14400)), 0.0)
    assert [v.prefix for v in t.view(IF, 0.0)] == [B, A]


def test_kernel_processed_prefixes() -> None:
    t = Tracker()
    t.observe(KernelPrefixObserved(IF, A, 86400, 1800, on_link=True, autonomous=True), 0.0)
    t.observe(KernelPrefixObserved(IF, A, 60, 0, on_link=True, autonomous=True), 0.0)
    t.observe(KernelPrefixObserved(IF, B, 86400, 1800, on_link=True, autonomous=False), 0.0)
    t.observe(KernelPrefixObserved(IF, B, 60, 0, on_link=True, autonomous=False), 0.0)
    assert [(v.prefix, v.state, v.valid, v.sources) for v in t.view(IF, 0.0)] == [
        (A, PrefixStatus.DEPRECATED, 7200, (SourceKind.KERNEL_RA,)),
        (B, PrefixStatus.DEPRECATED, 60, (SourceKind.KERNEL_RA,)),
    ]


def test_delegations_replace_the_whole_set() -> None:
    t = Tracker(TrackerConfig(withdrawn_retention=100))
    pd = IPv6Network("2001:db8:100::/56")
    t.observe(Delegated("wan", ((pd, 7200, 3600),)), 0.0)
    assert t.view("wan", 0.0)[0].sources == (SourceKind.DHCPV6_PD,)
    t.observe(Delegated("wan", ((pd, 60, 30),)), 10.0)  # DHCPv6 is not subject to the two-hour rule
    assert t.view("wan", 10.0)[0].valid == 60
    up = t.observe(Delegated("wan", ()), 20.0)
    assert up.changes == (("wan", pd, Change.WITHDRAWN),)


def test_a_lifetime_beyond_32_bits_never_enters_the_state() -> None:
    t = Tracker()
    pd = IPv6Network("2001:db8:100::/56")
    up = t.observe(Delegated("wan", ((pd, 2**40, 60), (A, 7200, -1))), 0.0)
    assert [i.reason for i in up.ignored] == ["lifetime-out-of-range"] * 2
    assert t.view("wan", 0.0) == () and not up.changed


def test_interface_removed_withdraws_everything() -> None:
    t = Tracker()
    t.observe(adv(pio(A, 3600, 1800), pio(B, 3600, 1800)), 0.0)
    up = t.observe(InterfaceRemoved(IF), 1.0)
    assert {c[2] for c in up.changes} == {Change.WITHDRAWN}


def test_the_prefix_table_is_bounded() -> None:
    t = Tracker(TrackerConfig(max_prefixes=4))
    pios = tuple(pio(IPv6Network(f"2001:db8:{i:x}::/64"), 3600, 1800) for i in range(10))
    up = t.observe(adv(*pios), 0.0)
    assert len(t.view(IF, 0.0)) == 4
    assert [i.reason for i in up.ignored] == ["prefix-table-full"] * 6


# -- property: whatever happens, the published state is valid ------------------------------

pfx = st.sampled_from(
    [A, B, IPv6Network("2001:db8:c::/64"), IPv6Network("2001:db8::/56"), IPv6Network("fd00::/64")]
)
life = st.one_of(st.integers(0, 20000), st.just(ra.INFINITE))
routers = st.sampled_from([R1, R2])
observations: st.SearchStrategy[Observation] = st.one_of(
    st.builds(
        lambda r, p, ps: RAObserved(IF, r, p, tuple(ps)),
        routers,
        st.sampled_from(list(ra.RouterPreference)),
        st.lists(st.builds(pio, pfx, life, life, st.booleans(), st.booleans()), max_size=4),
    ),
    st.builds(
        lambda p, v, pr, lf, af: KernelPrefixObserved(IF, p, v, pr, on_link=lf, autonomous=af),
        pfx,
        life,
        life,
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        lambda p, v, pr, d: AddressObserved(
            IF, IPv6Interface(f"{p.network_address}5/{p.prefixlen}"), v, pr, d
        ),
        pfx,
        life,
        life,
        st.booleans(),
    ),
    st.builds(lambda p: AddressRemoved(IF, IPv6Interface(f"{p.network_address}5/{p.prefixlen}")), pfx),
    st.builds(lambda ps: Delegated(IF, tuple(ps)), st.lists(st.tuples(pfx, life, life), max_size=3)),
    st.just(InterfaceRemoved(IF)),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(observations, st.floats(0, 5000, allow_nan=False)), max_size=30))
def test_no_sequence_of_observations_publishes_an_invalid_state(
    steps: list[tuple[Observation, float]],
) -> None:
    t = Tracker()
    now = 0.0
    for i, (obs, dt) in enumerate(steps):
        now += dt
        t.observe(obs, now)
        t.tick(now)
        views = t.view(IF, now)
        # Building the wire message validates every invariant of the contract.
        message(router="r", interface=IF, boot="0" * 16, sequence=i, observed_at="x", views=views)
        assert len({v.prefix for v in views}) == len(views)
        deadline = t.next_deadline(now)
        assert deadline is None or deadline > now  # a deadline in the past would spin the daemon
