"""Router Advertisements as frozen types: parse and pack, symmetric.

One type per RFC structure, the section cited on each. ``parse`` turns bytes
into a :class:`RouterAdvertisement` or raises :class:`RAParseError` (the remote
sent garbage) and nothing else; ``pack`` turns one back into the same bytes, so
tests build packets with this code and round-trip them. Options this module
does not model are kept as :class:`RawOption`; a prefix option of the wrong
length is kept as a :class:`MalformedOption` and the rest of the RA is used.

``accept`` adds the receive-side checks of RFC 4861 §6.1.2 that need more than
the ICMPv6 bytes (hop limit, source address, an optional router allowlist).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

ICMPV6_ROUTER_SOLICITATION = 133
ICMPV6_ROUTER_ADVERTISEMENT = 134
INFINITE = 0xFFFFFFFF
"""A lifetime of all ones means "forever" (RFC 4861 §4.6.2)."""

_RA_HEADER = struct.Struct(
    "!BBHBBHII"
)  # type, code, checksum, hop limit, flags, lifetime, reachable, retrans
_PIO_BODY = struct.Struct("!BBIII16s")  # prefix length, flags, valid, preferred, reserved2, prefix


class RAError(Exception):
    """An RA we will not use. ``reason`` is a short stable code for counters and logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RAParseError(RAError):
    """The bytes are not a well-formed Router Advertisement (the remote sent garbage)."""


class RouterPreference(enum.IntEnum):
    """Default Router Preference, RFC 4191 §2.2 (0b10 is reserved and read as medium)."""

    MEDIUM = 0
    HIGH = 1
    LOW = 3


# -- options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceLinkLayerAddress:
    """Source Link-Layer Address option, RFC 4861 §4.6.1 (type 1)."""

    TYPE = 1
    address: bytes

    def __post_init__(self) -> None:
        if (len(self.address) + 2) % 8:
            raise ValueError("link-layer address must pad the option to a multiple of 8 bytes")

    def body(self) -> bytes:
        return self.address


@dataclass(frozen=True)
class PrefixInformation:
    """Prefix Information option, RFC 4861 §4.6.2 (type 3, length 4).

    Flags: L on-link 0x80, A autonomous 0x40, R router address 0x20
    (RFC 6275 §7.2), P "DHCPv6-PD preferred" 0x10 (RFC 9762).
    """

    TYPE = 3
    prefix: IPv6Network
    valid_lifetime: int
    preferred_lifetime: int
    on_link: bool = True
    autonomous: bool = True
    router_address: bool = False
    pd_preferred: bool = False

    def __post_init__(self) -> None:
        for name in ("valid_lifetime", "preferred_lifetime"):
            value = getattr(self, name)
            if not 0 <= value <= INFINITE:
                raise ValueError(f"{name} {value} is outside 0..0xffffffff")

    @property
    def flags(self) -> int:
        return (
            (0x80 if self.on_link else 0)
            | (0x40 if self.autonomous else 0)
            | (0x20 if self.router_address else 0)
            | (0x10 if self.pd_preferred else 0)
        )

    def body(self) -> bytes:
        return _PIO_BODY.pack(
            self.prefix.prefixlen,
            self.flags,
            self.valid_lifetime,
            self.preferred_lifetime,
            0,
            self.prefix.network_address.packed,
        )

    @classmethod
    def from_body(cls, body: bytes) -> PrefixInformation:
        if len(body) != _PIO_BODY.size:
            raise RAParseError(
                "bad-option-length", f"prefix information option is {len(body) + 2} bytes, not 32"
            )
        plen, flags, valid, preferred, _reserved, raw = _PIO_BODY.unpack(body)
        if plen > 128:
            raise RAParseError("bad-prefix-length", f"prefix length {plen} > 128")
        # RFC 4861 §4.6.2: bits after the prefix length are reserved; mask them.
        prefix = IPv6Network((IPv6Address(raw), plen), strict=False)
        return cls(
            prefix=prefix,
            valid_lifetime=valid,
            preferred_lifetime=preferred,
            on_link=bool(flags & 0x80),
            autonomous=bool(flags & 0x40),
            router_address=bool(flags & 0x20),
            pd_preferred=bool(flags & 0x10),
        )


@dataclass(frozen=True)
class MTU:
    """MTU option, RFC 4861 §4.6.4 (type 5, length 1)."""

    TYPE = 5
    mtu: int

    def body(self) -> bytes:
        return struct.pack("!HI", 0, self.mtu)

    @classmethod
    def from_body(cls, body: bytes) -> MTU:
        if len(body) != 6:
            raise RAParseError("bad-option-length", f"MTU option is {len(body) + 2} bytes, not 8")
        return cls(struct.unpack("!HI", body)[1])


@dataclass(frozen=True)
class RecursiveDNSServer:
    """Recursive DNS Server option, RFC 8106 §5.1 (type 25)."""

    TYPE = 25
    lifetime: int
    servers: tuple[IPv6Address, ...]

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("an RDNSS option carries at least one server")

    def body(self) -> bytes:
        return struct.pack("!HI", 0, self.lifetime) + b"".join(s.packed for s in self.servers)

    @classmethod
    def from_body(cls, body: bytes) -> RecursiveDNSServer:
        # RFC 8106 §5.1: length is 3 + 2 * servers, so at least one server.
        if len(body) < 22 or (len(body) - 6) % 16:
            raise RAParseError("bad-option-length", f"RDNSS option of {len(body) + 2} bytes")
        lifetime = struct.unpack_from("!I", body, 2)[0]
        servers = tuple(IPv6Address(body[i : i + 16]) for i in range(6, len(body), 16))
        return cls(lifetime, servers)


@dataclass(frozen=True)
class RawOption:
    """Any option this module does not model, kept byte for byte."""

    type: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 255:
            raise ValueError(f"option type {self.type} is outside 0..255")
        if (len(self.data) + 2) % 8 or len(self.data) + 2 > 255 * 8:
            raise ValueError("raw option data must pad the option to 8..2040 bytes in steps of 8")

    def body(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class MalformedOption(RawOption):
    """An option of a type this module models whose body is malformed, kept byte for byte.

    Only the option is left out, not the RA: RFC 4861 §6.1.2 voids an RA for
    an option of length 0, not for a prefix option of another length. Equal
    when the bytes are; ``reason`` and ``detail`` explain, for counters and logs.
    """

    reason: str = field(compare=False)
    detail: str = field(compare=False)


Option = SourceLinkLayerAddress | PrefixInformation | MTU | RecursiveDNSServer | RawOption


def _option_type(opt: Option) -> int:
    return opt.type if isinstance(opt, RawOption) else opt.TYPE


def _parse_option(kind: int, body: bytes) -> Option:
    if kind == PrefixInformation.TYPE:
        try:
            return PrefixInformation.from_body(body)
        except RAParseError as e:
            if e.reason != "bad-option-length":
                raise
            return MalformedOption(kind, body, "bad-pio-length", e.detail)
    if kind == MTU.TYPE:
        return MTU.from_body(body)
    if kind == RecursiveDNSServer.TYPE:
        return RecursiveDNSServer.from_body(body)
    if kind == SourceLinkLayerAddress.TYPE:
        return SourceLinkLayerAddress(body)
    return RawOption(kind, body)


def pack_options(options: tuple[Option, ...]) -> bytes:
    out = bytearray()
    for opt in options:
        body = opt.body()
        out += bytes((_option_type(opt), (len(body) + 2) // 8)) + body
    return bytes(out)


def parse_options(data: bytes) -> tuple[Option, ...]:
    """Parse the TLV options area (RFC 4861 §4.6: length in units of 8 bytes)."""
    options: list[Option] = []
    i = 0
    while i < len(data):
        if len(data) - i < 2:
            raise RAParseError("truncated", f"option header cut off at offset {16 + i}")
        kind, units = data[i], data[i + 1]
        if units == 0:
            # RFC 4861 §6.1.2: an option of length zero makes the whole RA invalid.
            raise RAParseError("zero-length-option", f"option type {kind} at offset {16 + i} has length 0")
        end = i + units * 8
        if end > len(data):
            raise RAParseError("truncated", f"option type {kind} at offset {16 + i} runs past the packet")
        options.append(_parse_option(kind, data[i + 2 : end]))
        i = end
    return tuple(options)


# -- the message -----------------------------------------------------------------------


@dataclass(frozen=True)
class RouterAdvertisement:
    """Router Advertisement, RFC 4861 §4.2, with the RFC 4191/5175 flag bits."""

    cur_hop_limit: int = 64
    managed: bool = False
    other: bool = False
    home_agent: bool = False
    preference: RouterPreference = RouterPreference.MEDIUM
    proxy: bool = False
    router_lifetime: int = 1800
    reachable_time: int = 0
    retrans_timer: int = 0
    options: tuple[Option, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.cur_hop_limit <= 255:
            raise ValueError("cur_hop_limit is one byte")
        if not 0 <= self.router_lifetime <= 0xFFFF:
            raise ValueError("router_lifetime is two bytes")

    @property
    def prefixes(self) -> tuple[PrefixInformation, ...]:
        return tuple(o for o in self.options if isinstance(o, PrefixInformation))

    @property
    def malformed(self) -> tuple[MalformedOption, ...]:
        """Options left out of this RA's use (count them)."""
        return tuple(o for o in self.options if isinstance(o, MalformedOption))

    @property
    def flags(self) -> int:
        return (
            (0x80 if self.managed else 0)
            | (0x40 if self.other else 0)
            | (0x20 if self.home_agent else 0)
            | (int(self.preference) << 3)
            | (0x04 if self.proxy else 0)
        )

    def pack(self) -> bytes:
        """ICMPv6 bytes with a zero checksum (the kernel fills it in on a raw socket)."""
        header = _RA_HEADER.pack(
            ICMPV6_ROUTER_ADVERTISEMENT,
            0,
            0,
            self.cur_hop_limit,
            self.flags,
            self.router_lifetime,
            self.reachable_time,
            self.retrans_timer,
        )
        return header + pack_options(self.options)


def parse(data: bytes) -> RouterAdvertisement:
    """Parse ICMPv6 bytes into a RouterAdvertisement or raise :class:`RAParseError`."""
    if len(data) < _RA_HEADER.size:
        # RFC 4861 §6.1.2: ICMP length (derived from the IP length) is 16 or more octets.
        raise RAParseError("truncated", f"{len(data)} bytes, a Router Advertisement needs at least 16")
    kind, code, _checksum, hop, flags, lifetime, reachable, retrans = _RA_HEADER.unpack_from(data)
    if kind != ICMPV6_ROUTER_ADVERTISEMENT:
        raise RAParseError("not-an-ra", f"ICMPv6 type {kind}, not 134")
    if code != 0:
        raise RAParseError("bad-code", f"ICMP code {code}, RFC 4861 requires 0")
    prf = (flags >> 3) & 0x3
    return RouterAdvertisement(
        cur_hop_limit=hop,
        managed=bool(flags & 0x80),
        other=bool(flags & 0x40),
        home_agent=bool(flags & 0x20),
        preference=RouterPreference(prf) if prf != 2 else RouterPreference.MEDIUM,
        proxy=bool(flags & 0x04),
        router_lifetime=lifetime,
        reachable_time=reachable,
        retrans_timer=retrans,
        options=parse_options(data[_RA_HEADER.size :]),
    )


def accept(
    data: bytes,
    *,
    hop_limit: int | None,
    source: IPv6Address,
    allowed_routers: frozenset[IPv6Address] = frozenset(),
    max_prefixes: int = 16,
) -> RouterAdvertisement:
    """Validate a received RA per RFC 4861 §6.1.2 and parse it.

    ``hop_limit`` comes from the IPV6_HOPLIMIT ancillary data; ``None`` means
    the socket did not deliver it, which we treat as a failed check rather than
    trusting a packet that may have crossed a router.
    """
    if hop_limit != 255:
        # RFC 4861 §6.1.2: the IP Hop Limit field has a value of 255, i.e. the
        # packet could not have been forwarded by a router.
        raise RAError("hop-limit", f"hop limit {hop_limit}, must be 255 (forwarded or forged)")
    if not source.is_link_local:
        # RFC 4861 §6.1.2: IP Source Address is a link-local address.
        raise RAError("source-not-link-local", f"source {source} is not link-local")
    if allowed_routers and source not in allowed_routers:
        raise RAError("router-not-allowed", f"router {source} is not in the configured allowlist")
    ra = parse(data)
    if len(ra.prefixes) > max_prefixes:
        raise RAError(
            "too-many-prefixes",
            f"{len(ra.prefixes)} prefix options; more than {max_prefixes} is not a real router",
        )
    return ra


def router_solicitation() -> bytes:
    """A Router Solicitation (RFC 4861 §4.1) without options, checksum left to the kernel."""
    return struct.pack("!BBHI", ICMPV6_ROUTER_SOLICITATION, 0, 0, 0)
