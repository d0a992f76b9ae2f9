"""RA parsing and packing (routerd/core/ra.py): byte vectors, round trips, fuzzing, RFC 4861 §6.1.2."""

from __future__ import annotations

import contextlib
from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core import ra

# An RA as radvd sends it: one PIO, an MTU option and a source link-layer address.
VECTOR = bytes.fromhex(
    "86"  # type 134, Router Advertisement
    "00"  # code 0
    "0000"  # checksum (the kernel's business)
    "40"  # cur hop limit 64
    "c8"  # flags: M=1 O=1 H=0 Prf=01 (high) P=0  -> 1100 1000
    "0708"  # router lifetime 1800
    "00000000"  # reachable time
    "00000000"  # retrans timer
    # Prefix Information: type 3, length 4 (32 bytes)
    "03" "04"
    "40"  # prefix length 64
    "c0"  # L=1 A=1 R=0 P=0
    "00000e10"  # valid lifetime 3600
    "00000708"  # preferred lifetime 1800
    "00000000"  # reserved2
    "20010db8000100000000000000000000"  # 2001:db8:1::
    # MTU: type 5, length 1
    "05" "01" "0000" "000005dc"  # 1500
    # Source link-layer address: type 1, length 1
    "01" "01" "020000000001"
)  # fmt: skip

EXPECTED = ra.RouterAdvertisement(
    cur_hop_limit=64,
    managed=True,
    other=True,
    preference=ra.RouterPreference.HIGH,
    router_lifetime=1800,
    options=(
        ra.PrefixInformation(IPv6Network("2001:db8:1::/64"), valid_lifetime=3600, preferred_lifetime=1800),
        ra.MTU(1500),
        ra.SourceLinkLayerAddress(bytes.fromhex("020000000001")),
    ),
)


def test_vector_parses_field_by_field() -> None:
    assert ra.parse(VECTOR) == EXPECTED


def test_vector_packs_back_to_the_same_bytes() -> None:
    assert EXPECTED.pack() == VECTOR


def test_pio_flags_each_bit() -> None:
    for flag, byte in (
        ("on_link", 0x80),
        ("autonomous", 0x40),
        ("router_address", 0x20),
        ("pd_preferred", 0x10),
    ):
        kwargs = {"on_link": False, "autonomous": False, flag: True}
        pio = ra.PrefixInformation(IPv6Network("2001:db8::/64"), 1, 1, **kwargs)
        assert pio.body()[1] == byte
        assert ra.PrefixInformation.from_body(pio.body()) == pio


def test_host_bits_in_a_pio_are_masked_on_receive() -> None:
    body = bytearray(ra.PrefixInformation(IPv6Network("2001:db8:1::/64"), 10, 5).body())
    body[-1] = 0x55  # host bits set by a sloppy router
    assert ra.PrefixInformation.from_body(bytes(body)).prefix == IPv6Network("2001:db8:1::/64")


def test_unknown_options_are_kept_raw_and_round_trip() -> None:
    adv = ra.RouterAdvertisement(options=(ra.RawOption(31, b"\x00" * 14), ra.RawOption(200, b"abcdef")))
    assert ra.parse(adv.pack()) == adv


def test_rdnss_round_trips() -> None:
    opt = ra.RecursiveDNSServer(600, (IPv6Address("2001:db8::53"), IPv6Address("2001:db8::54")))
    adv = ra.RouterAdvertisement(options=(opt,))
    assert ra.parse(adv.pack()) == adv


def test_reserved_preference_reads_as_medium() -> None:
    data = bytearray(ra.RouterAdvertisement().pack())
    data[5] = 0b00010000  # Prf = 10 (reserved), RFC 4191 §2.2: treat as medium
    assert ra.parse(bytes(data)).preference is ra.RouterPreference.MEDIUM


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (VECTOR[:15], "truncated"),
        (b"\x85" + VECTOR[1:], "not-an-ra"),
        (VECTOR[:1] + b"\x01" + VECTOR[2:], "bad-code"),
        (VECTOR[:17] + b"\x00" + VECTOR[18:], "zero-length-option"),  # PIO length 0
        (VECTOR[:16] + b"\x03\x07" + VECTOR[18:], "truncated"),  # PIO claims 56 bytes, runs past the end
        (VECTOR[:18] + b"\x81" + VECTOR[19:], "bad-prefix-length"),  # prefix length 129
        (VECTOR + b"\x05", "truncated"),  # a lone option type byte
        (VECTOR[:48] + b"\x05\x02" + VECTOR[50:] + b"\x00" * 8, "bad-option-length"),  # MTU of 16 bytes
    ],
)
def test_malformed_packets_raise_our_own_error(data: bytes, reason: str) -> None:
    with pytest.raises(ra.RAParseError) as err:
        ra.parse(data)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "data",
    [
        VECTOR[:16] + b"\x03\x05" + VECTOR[18:],  # PIO of 40 bytes (it swallows the MTU option)
        VECTOR[:16] + b"\x03\x03" + VECTOR[18:40] + VECTOR[48:],  # PIO of 24 bytes
    ],
    ids=["40 bytes", "24 bytes"],
)
def test_a_prefix_option_of_the_wrong_length_is_left_out_and_the_rest_is_used(data: bytes) -> None:
    good = ra.PrefixInformation(IPv6Network("2001:db8:2::/64"), 600, 300)
    data = data + ra.pack_options((good,))
    adv = ra.parse(data)
    assert adv.prefixes == (good,)
    assert [(m.type, m.reason) for m in adv.malformed] == [(3, "bad-pio-length")]
    assert ra.SourceLinkLayerAddress(bytes.fromhex("020000000001")) in adv.options
    assert adv.pack() == data


def test_rdnss_without_a_server_is_malformed() -> None:
    data = ra.RouterAdvertisement().pack() + bytes((25, 1)) + b"\x00" * 6
    with pytest.raises(ra.RAParseError, match="RDNSS"):
        ra.parse(data)


# -- receive-side checks (RFC 4861 §6.1.2) ---------------------------------------------------

LL = IPv6Address("fe80::1")


def test_accept_takes_a_valid_ra() -> None:
    assert ra.accept(VECTOR, hop_limit=255, source=LL) == EXPECTED


@pytest.mark.parametrize(
    ("hop_limit", "source", "allow", "reason"),
    [
        (64, LL, frozenset(), "hop-limit"),
        (None, LL, frozenset(), "hop-limit"),
        (255, IPv6Address("2001:db8::1"), frozenset(), "source-not-link-local"),
        (255, LL, frozenset({IPv6Address("fe80::2")}), "router-not-allowed"),
    ],
)
def test_accept_refuses(
    hop_limit: int | None, source: IPv6Address, allow: frozenset[IPv6Address], reason: str
) -> None:
    with pytest.raises(ra.RAError) as err:
        ra.accept(VECTOR, hop_limit=hop_limit, source=source, allowed_routers=allow)
    assert err.value.reason == reason


def test_accept_refuses_a_flood_of_prefixes() -> None:
    pios = tuple(ra.PrefixInformation(IPv6Network(f"2001:db8:{i:x}::/64"), 3600, 1800) for i in range(100))
    with pytest.raises(ra.RAError) as err:
        ra.accept(ra.RouterAdvertisement(options=pios).pack(), hop_limit=255, source=LL)
    assert err.value.reason == "too-many-prefixes"


def test_router_solicitation_bytes() -> None:
    assert ra.router_solicitation() == bytes.fromhex("8500000000000000")


# -- properties ----------------------------------------------------------------------------

prefixes = st.builds(
    lambda addr, plen: IPv6Network((IPv6Address(addr), plen), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
lifetimes = st.integers(0, ra.INFINITE)
options = st.one_of(
    st.builds(
        ra.PrefixInformation,
        prefixes,
        lifetimes,
        lifetimes,
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(ra.MTU, st.integers(0, 2**32 - 1)),
    st.builds(ra.SourceLinkLayerAddress, st.binary(min_size=6, max_size=6)),
    st.builds(
        ra.RecursiveDNSServer,
        lifetimes,
        st.lists(st.builds(IPv6Address, st.integers(0, 2**128 - 1)), min_size=1, max_size=4).map(tuple),
    ),
    st.builds(
        ra.RawOption,
        st.integers(0, 255).filter(lambda t: t not in (1, 3, 5, 25)),
        st.integers(0, 4).flatmap(lambda n: st.binary(min_size=6 + 8 * n, max_size=6 + 8 * n)),
    ),
    st.builds(
        lambda data: ra.MalformedOption(3, data, "bad-pio-length", "any explanation"),
        st.sampled_from([0, 1, 2, 4]).flatmap(lambda n: st.binary(min_size=6 + 8 * n, max_size=6 + 8 * n)),
    ),
)
advertisements = st.builds(
    ra.RouterAdvertisement,
    cur_hop_limit=st.integers(0, 255),
    managed=st.booleans(),
    other=st.booleans(),
    home_agent=st.booleans(),
    preference=st.sampled_from(list(ra.RouterPreference)),
    proxy=st.booleans(),
    router_lifetime=st.integers(0, 0xFFFF),
    reachable_time=st.integers(0, 2**32 - 1),
    retrans_timer=st.integers(0, 2**32 - 1),
    options=st.lists(options, max_size=8).map(tuple),
)


@given(advertisements)
def test_parse_inverts_pack(adv: ra.RouterAdvertisement) -> None:
    assert ra.parse(adv.pack()) == adv


@given(st.binary(max_size=600))
def test_random_bytes_parse_or_raise_our_error(data: bytes) -> None:
    with contextlib.suppress(ra.RAParseError):
        ra.parse(data)


@given(advertisements, st.integers(0, 700), st.binary(min_size=1, max_size=4))
def test_mutated_packets_parse_or_raise_our_error(adv: ra.RouterAdvertisement, at: int, junk: bytes) -> None:
    data = bytearray(b"\x86\x00" + adv.pack()[2:])
    at = at % (len(data) + 1)
    data[at : at + len(junk)] = junk
    with contextlib.suppress(ra.RAParseError):
        ra.parse(bytes(data))
