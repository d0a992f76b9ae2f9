"""Range arithmetic: a prefix plus host suffixes -> addresses, exact CIDR sets, subnets.

An address range is written as two suffixes (``::f000:0:0:0`` ..
``::ffff:ffff:ffff:ffff``) that only fill host bits; the prefix supplies the
network bits. The CIDR set of a range covers exactly the range, never a wider
block (the original operator used one approximate covering CIDR).

It lives in routerd's core because both programs place ranges: clusterd for a
DynamicPrefix's address ranges, routerd for its nftables range sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network, collapse_addresses, summarize_address_range

MAX_CIDRS = 256
"""A range whose exact cover needs more CIDRs is refused (at most 2 per bit is 254)."""


class RangeError(ValueError):
    """A range or subnet that cannot be placed in a prefix; the text says why."""


@dataclass(frozen=True)
class PlacedRange:
    """A range placed in one prefix."""

    start: IPv6Address
    end: IPv6Address
    cidrs: tuple[IPv6Network, ...]

    def contains(self, address: IPv6Address) -> bool:
        return self.start <= address <= self.end

    def offset_of(self, address: IPv6Address) -> int:
        """How far ``address`` is from the start of the range."""
        if not self.contains(address):
            raise RangeError(f"{address} is outside {self.start}-{self.end}")
        return int(address) - int(self.start)

    def at(self, offset: int) -> IPv6Address:
        """The address ``offset`` after the start; the same offset in another prefix's range."""
        address = IPv6Address(int(self.start) + offset)
        if not self.contains(address):
            raise RangeError(f"offset {offset} is outside {self.start}-{self.end}")
        return address


def host_bits(prefix: IPv6Network) -> int:
    return 128 - prefix.prefixlen


def place(prefix: IPv6Network, suffix: IPv6Address) -> IPv6Address:
    """The address with ``prefix``'s network bits and ``suffix``'s host bits."""
    if int(suffix) >> host_bits(prefix):
        raise RangeError(f"suffix {suffix} has bits outside the host part of {prefix}")
    return IPv6Address(int(prefix.network_address) | int(suffix))


def suffix_of(prefix: IPv6Network, address: IPv6Address) -> IPv6Address:
    """The host part of ``address`` within ``prefix``."""
    if address not in prefix:
        raise RangeError(f"{address} is not in {prefix}")
    return IPv6Address(int(address) & ((1 << host_bits(prefix)) - 1))


def exact_cidrs(start: IPv6Address, end: IPv6Address) -> tuple[IPv6Network, ...]:
    """The smallest set of CIDRs covering exactly ``start``..``end``."""
    if start > end:
        raise RangeError(f"range start {start} is after its end {end}")
    cidrs = tuple(collapse_addresses(summarize_address_range(start, end)))
    if len(cidrs) > MAX_CIDRS:
        raise RangeError(f"{start}-{end} needs {len(cidrs)} CIDRs; align the range to fewer blocks")
    return cidrs


def place_range(prefix: IPv6Network, start: IPv6Address, end: IPv6Address) -> PlacedRange:
    """Place the suffix range ``start``..``end`` in ``prefix``."""
    first, last = place(prefix, start), place(prefix, end)
    return PlacedRange(first, last, exact_cidrs(first, last))


def place_subnet(prefix: IPv6Network, offset: int, prefix_length: int) -> IPv6Network:
    """The ``offset``-th /``prefix_length`` inside ``prefix`` (subnet mode: carve /64s from a /56)."""
    if prefix_length < prefix.prefixlen:
        raise RangeError(f"a /{prefix_length} subnet does not fit in {prefix}")
    count = 1 << (prefix_length - prefix.prefixlen)
    if not 0 <= offset < count:
        raise RangeError(
            f"offset {offset} is outside 0..{count - 1} for /{prefix_length} subnets of {prefix}"
        )
    base = int(prefix.network_address) + (offset << (128 - prefix_length))
    return IPv6Network((IPv6Address(base), prefix_length))
