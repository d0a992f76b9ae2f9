"""Range arithmetic (routerd/core/ranges.py): exact CIDR sets, placement, subnets, offsets."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core import ranges

P = IPv6Network("2001:db8:1234::/64")


def test_the_original_operators_range() -> None:
    placed = ranges.place_range(P, IPv6Address("::f000:0:0:0"), IPv6Address("::ffff:ffff:ffff:ffff"))
    assert placed.start == IPv6Address("2001:db8:1234:0:f000::")
    assert placed.end == IPv6Address("2001:db8:1234:0:ffff:ffff:ffff:ffff")
    assert placed.cidrs == (IPv6Network("2001:db8:1234:0:f000::/68"),)


def test_an_unaligned_range_gets_an_exact_set_not_a_wider_block() -> None:
    placed = ranges.place_range(P, IPv6Address("::10"), IPv6Address("::1f"))
    assert placed.cidrs == (IPv6Network("2001:db8:1234::10/124"),)
    placed = ranges.place_range(P, IPv6Address("::3"), IPv6Address("::10"))
    assert [str(c) for c in placed.cidrs] == [
        "2001:db8:1234::3/128",
        "2001:db8:1234::4/126",
        "2001:db8:1234::8/125",
        "2001:db8:1234::10/128",
    ]


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(ranges.RangeError, match="after its end"):
        ranges.place_range(P, IPv6Address("::20"), IPv6Address("::10"))
    with pytest.raises(ranges.RangeError, match="outside the host part"):
        ranges.place(P, IPv6Address("1::1"))
    with pytest.raises(ranges.RangeError, match="does not fit"):
        ranges.place_subnet(P, 0, 56)
    with pytest.raises(ranges.RangeError, match=r"outside 0\.\.255"):
        ranges.place_subnet(IPv6Network("2001:db8:100::/56"), 256, 64)


def test_subnets_carve_from_a_delegated_prefix() -> None:
    pd = IPv6Network("2001:db8:100::/56")
    assert ranges.place_subnet(pd, 0, 64) == IPv6Network("2001:db8:100::/64")
    assert ranges.place_subnet(pd, 255, 64) == IPv6Network("2001:db8:100:ff::/64")
    assert ranges.place_subnet(pd, 3, 60) == IPv6Network("2001:db8:100:30::/60")


def test_offsets_carry_a_host_across_prefixes() -> None:
    old = ranges.place_range(P, IPv6Address("::f000:0:0:0"), IPv6Address("::ffff:ffff:ffff:ffff"))
    new = ranges.place_range(IPv6Network("2001:db8:5678::/64"), IPv6Address("::f000:0:0:0"),
                             IPv6Address("::ffff:ffff:ffff:ffff"))  # fmt: skip
    addr = IPv6Address("2001:db8:1234:0:f000::2a")
    assert new.at(old.offset_of(addr)) == IPv6Address("2001:db8:5678:0:f000::2a")
    with pytest.raises(ranges.RangeError):
        new.offset_of(addr)


suffix64 = st.integers(0, 2**64 - 1).map(IPv6Address)


@given(suffix64, suffix64)
def test_cidr_set_covers_exactly_the_range(a: IPv6Address, b: IPv6Address) -> None:
    start, end = min(a, b), max(a, b)
    placed = ranges.place_range(P, start, end)
    assert placed.start == ranges.place(P, start) and placed.end == ranges.place(P, end)
    # Disjoint, sorted, contiguous, and exactly start..end: every address is in it and nothing else.
    assert placed.cidrs[0].network_address == placed.start
    assert placed.cidrs[-1].broadcast_address == placed.end
    for left, right in zip(placed.cidrs, placed.cidrs[1:], strict=False):
        assert int(left.broadcast_address) + 1 == int(right.network_address)
    assert sum(c.num_addresses for c in placed.cidrs) == int(placed.end) - int(placed.start) + 1
    assert len(placed.cidrs) <= 2 * 64


@given(suffix64, suffix64, st.integers(0, 2**64 - 1))
def test_an_offset_maps_back_to_the_same_suffix(a: IPv6Address, b: IPv6Address, k: int) -> None:
    start, end = min(a, b), max(a, b)
    placed = ranges.place_range(P, start, end)
    offset = k % (int(end) - int(start) + 1)
    addr = placed.at(offset)
    assert placed.offset_of(addr) == offset and placed.contains(addr)
    assert ranges.place(P, ranges.suffix_of(P, addr)) == addr
