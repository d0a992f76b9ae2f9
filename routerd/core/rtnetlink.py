"""rtnetlink messages routerd reads: addresses, links and RA-learned prefixes.

These are fixed C structures (linux/netlink.h, linux/rtnetlink.h,
linux/if_addr.h, linux/if_link.h); decoding them here costs a few kilobytes,
where importing pyroute2 costs over 20 MB of RSS on a router with 128 MB
(docs/performance.md). The tests check these decoders against pyroute2's on
messages from the running kernel.

``prefix_flags`` in RTM_NEWPREFIX changed meaning in December 2023 (Linux
commit bd4a816752ba, "support reporting otherwise unknown prefix flags in
RTM_NEWPREFIX"): it used to carry IF_PREFIX_ONLINK (0x01) and
IF_PREFIX_AUTOCONF (0x02); since then ``struct prefix_info`` has a union
with the PIO's flag byte and the kernel copies that byte as received (L 0x80,
A 0x40, R 0x20, P 0x10, and the reserved bits as the router set them). Which
layout a kernel uses is a fact of its version (:func:`prefix_flags_layout`);
the byte alone cannot tell, since a router may set reserved bits.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

AF_INET6 = 10
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWPREFIX = 52
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300

RTNLGRP_LINK = 1
RTNLGRP_IPV6_IFADDR = 9
RTNLGRP_IPV6_PREFIX = 18

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_CACHEINFO = 6
IFA_FLAGS = 8
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
IFLA_IFNAME = 3
IFF_UP = 0x1
PREFIX_ADDRESS = 1
PREFIX_CACHEINFO = 2
RT_SCOPE_UNIVERSE = 0

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, ifindex
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, ifindex, flags, change
_PREFIXMSG = struct.Struct("=BBHiBBBB")  # family, pad1, pad2, ifindex, type, length, flags, pad3
_RTATTR = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")
_IFA_CACHEINFO = struct.Struct("=IIII")  # preferred, valid, created, updated
_PREFIX_CACHEINFO = struct.Struct("=II")  # preferred, valid


class NetlinkError(ValueError):
    """Bytes that do not decode as the rtnetlink message they claim to be."""


def groups_mask(*groups: int) -> int:
    """The bind() bitmask for multicast groups numbered below 33."""
    mask = 0
    for g in groups:
        mask |= 1 << (g - 1)
    return mask


def split(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (type, payload after the header) for each message in a datagram."""
    i = 0
    while i + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, i)
        if length < _NLMSGHDR.size or i + length > len(data):
            raise NetlinkError(f"netlink message of length {length} at offset {i} in {len(data)} bytes")
        yield kind, data[i + _NLMSGHDR.size : i + length]
        i += (length + 3) & ~3


def attributes(data: bytes, offset: int) -> dict[int, bytes]:
    """The rtattr TLVs from ``offset`` on (4-byte aligned)."""
    out: dict[int, bytes] = {}
    i = offset
    while i + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, i)
        if length < _RTATTR.size or i + length > len(data):
            raise NetlinkError(f"attribute of length {length} at offset {i}")
        out[kind & 0x3FFF] = data[i + _RTATTR.size : i + length]  # strip NLA_F_NESTED/NET_BYTEORDER
        i += (length + 3) & ~3
    return out


def dump_request(kind: int, family: int, sequence: int) -> bytes:
    """A dump request (RTM_GETADDR with an ifaddrmsg)."""
    body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + body


@dataclass(frozen=True)
class AddressMessage:
    """RTM_NEWADDR / RTM_DELADDR for one address."""

    ifindex: int
    address: IPv6Interface
    scope: int
    flags: int
    preferred: int
    valid: int


@dataclass(frozen=True)
class LinkMessage:
    """RTM_NEWLINK / RTM_DELLINK."""

    ifindex: int
    name: str
    up: bool


@dataclass(frozen=True)
class PrefixMessage:
    """RTM_NEWPREFIX: one PIO the kernel processed; ``flags`` as the kernel wrote them."""

    ifindex: int
    prefix: IPv6Network
    flags: int
    preferred: int
    valid: int


class PrefixFlagsLayout(enum.Enum):
    """What the kernel puts in ``prefix_flags`` (see the module docstring)."""

    IF_PREFIX = "if-prefix"
    """Before the change: IF_PREFIX_ONLINK 0x01 and IF_PREFIX_AUTOCONF 0x02, nothing else."""
    PIO = "pio"
    """Since the change: the PIO's flag byte, L 0x80 and A 0x40 (RFC 4861 §4.6.2)."""

    def decode(self, flags: int) -> tuple[bool, bool]:
        """(on-link, autonomous) from ``prefix_flags``."""
        if self is PrefixFlagsLayout.IF_PREFIX and not flags & ~0x03:
            return bool(flags & 0x01), bool(flags & 0x02)
        # Bits the old layout never writes: the kernel's version predates the change but
        # it was backported (distributions keep a frozen version, such as Ubuntu's 5.15.0-N).
        return bool(flags & 0x80), bool(flags & 0x40)


_PIO_LAYOUT_SINCE = {(5, 4): 265, (5, 10): 205, (5, 15): 144, (6, 1): 69, (6, 6): 8}
"""Stable series that took the change, and from which release (all of 20 December 2023)."""


def prefix_flags_layout(release: str) -> PrefixFlagsLayout:
    """The ``prefix_flags`` layout of a kernel, from its release string (``uname -r``).

    Mainline copies the PIO byte from 6.7 on; the stable series in
    ``_PIO_LAYOUT_SINCE`` from the release named there. Anything else, or a
    release string we cannot read, gets the old layout, whose decoder still
    recognises the PIO byte when bits outside 0x03 are set.
    """
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if m is None:
        return PrefixFlagsLayout.IF_PREFIX
    major, minor, patch = int(m[1]), int(m[2]), int(m[3] or 0)
    since = _PIO_LAYOUT_SINCE.get((major, minor))
    if (major, minor) >= (6, 7) or (since is not None and patch >= since):
        return PrefixFlagsLayout.PIO
    return PrefixFlagsLayout.IF_PREFIX


def decode_address(payload: bytes) -> AddressMessage | None:
    """An IPv6 address message, or None for other families."""
    if len(payload) < _IFADDRMSG.size:
        raise NetlinkError(f"ifaddrmsg of {len(payload)} bytes")
    family, plen, flags8, scope, ifindex = _IFADDRMSG.unpack_from(payload)
    if family != AF_INET6:
        return None
    attrs = attributes(payload, _IFADDRMSG.size)
    # if_addr.h: IFA_LOCAL is the address on this host; for a point-to-point address
    # (``ip addr add A peer P``) IFA_ADDRESS is the peer P, otherwise the kernel sends
    # only IFA_ADDRESS, which is then the local address.
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None or len(raw) != 16 or plen > 128:
        raise NetlinkError("IPv6 ifaddrmsg without a 16-byte IFA_LOCAL or IFA_ADDRESS")
    flags = _U32.unpack(attrs[IFA_FLAGS])[0] if len(attrs.get(IFA_FLAGS, b"")) == 4 else flags8
    preferred = valid = 0xFFFFFFFF
    cache = attrs.get(IFA_CACHEINFO)
    if cache is not None and len(cache) == _IFA_CACHEINFO.size:
        preferred, valid, _created, _updated = _IFA_CACHEINFO.unpack(cache)
    return AddressMessage(ifindex, IPv6Interface((IPv6Address(raw), plen)), scope, flags, preferred, valid)


def decode_link(payload: bytes) -> LinkMessage:
    if len(payload) < _IFINFOMSG.size:
        raise NetlinkError(f"ifinfomsg of {len(payload)} bytes")
    _family, _type, ifindex, flags, _change = _IFINFOMSG.unpack_from(payload)
    name = attributes(payload, _IFINFOMSG.size).get(IFLA_IFNAME, b"").split(b"\0", 1)[0]
    return LinkMessage(ifindex, name.decode(errors="replace"), bool(flags & IFF_UP))


def decode_prefix(payload: bytes) -> PrefixMessage:
    """RTM_NEWPREFIX (pyroute2 has no decoder for it); read ``flags`` with a :class:`PrefixFlagsLayout`."""
    if len(payload) < _PREFIXMSG.size:
        raise NetlinkError(f"prefixmsg of {len(payload)} bytes, need {_PREFIXMSG.size}")
    family, _p1, _p2, ifindex, _type, plen, flags, _p3 = _PREFIXMSG.unpack_from(payload)
    if family != AF_INET6:
        raise NetlinkError(f"prefixmsg family {family}, expected AF_INET6")
    if plen > 128:
        raise NetlinkError(f"prefix length {plen}")
    attrs = attributes(payload, _PREFIXMSG.size)
    address, cache = attrs.get(PREFIX_ADDRESS), attrs.get(PREFIX_CACHEINFO)
    if address is None or len(address) != 16 or cache is None or len(cache) != _PREFIX_CACHEINFO.size:
        raise NetlinkError("PREFIX_ADDRESS or PREFIX_CACHEINFO missing")
    preferred, valid = _PREFIX_CACHEINFO.unpack(cache)
    prefix = IPv6Network((IPv6Address(address), plen), strict=False)
    return PrefixMessage(ifindex, prefix, flags, preferred, valid)


def encode_prefix(msg: PrefixMessage) -> bytes:
    """The inverse of :func:`decode_prefix` (tests build kernel messages with it)."""
    out = _PREFIXMSG.pack(AF_INET6, 0, 0, msg.ifindex, 3, msg.prefix.prefixlen, msg.flags, 0)
    out += _RTATTR.pack(_RTATTR.size + 16, PREFIX_ADDRESS) + msg.prefix.network_address.packed
    out += _RTATTR.pack(_RTATTR.size + _PREFIX_CACHEINFO.size, PREFIX_CACHEINFO)
    return out + _PREFIX_CACHEINFO.pack(msg.preferred, msg.valid)
