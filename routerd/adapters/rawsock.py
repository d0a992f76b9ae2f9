"""The raw ICMPv6 socket that hears Router Advertisements (needs CAP_NET_RAW).

Only moves bytes: opening and filtering the socket, sending a Router
Solicitation, and returning (bytes, hop limit, source) for the core to judge.
clusterd's RA fallback reuses this module.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from routerd.core.ra import ICMPV6_ROUTER_ADVERTISEMENT, router_solicitation

ICMP6_FILTER = 1
"""Socket option at level IPPROTO_ICMPV6 (58); Python does not export it."""

ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"


def icmp6_filter(*allowed: int) -> bytes:
    """The ICMP6_FILTER bitmap: 8 x u32 where a *set* bit blocks a type."""
    words = [0xFFFFFFFF] * 8
    for t in allowed:
        words[t >> 5] &= ~(1 << (t & 31))
    return struct.pack("=8I", *words)


@dataclass(frozen=True)
class Received:
    """One packet off the wire, before any judgement."""

    data: bytes
    hop_limit: int | None
    source: IPv6Address
    ifindex: int


class RASocket:
    """A non-blocking raw socket bound to one interface, hearing only type 134."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.ifindex = socket.if_nametoindex(ifname)
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter(ICMPV6_ROUTER_ADVERTISEMENT))
            # The hop limit arrives as ancillary data; RFC 4861 §6.1.2 needs it.
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            mreq = socket.inet_pton(socket.AF_INET6, ALL_NODES) + struct.pack("@I", self.ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s

    def fileno(self) -> int:
        return self.sock.fileno()

    def solicit(self) -> None:
        """Ask routers for an RA now instead of waiting up to MaxRtrAdvInterval."""
        self.sock.sendto(router_solicitation(), (ALL_ROUTERS, 0, 0, self.ifindex))

    def receive(self) -> Received | None:
        """One packet, or None when nothing is waiting."""
        try:
            data, ancdata, _flags, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(4))
        except BlockingIOError:
            return None
        hop: int | None = None
        for level, kind, cdata in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(cdata) >= 4:
                hop = struct.unpack("=i", cdata[:4])[0]
        return Received(data, hop, IPv6Address(addr[0].split("%", 1)[0]), int(addr[3]))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RASocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
