"""Netlink: the kernel's IPv6 addresses, RA-learned prefixes and link changes.

One non-blocking NETLINK_ROUTE socket joined to RTNLGRP_LINK,
RTNLGRP_IPV6_IFADDR and RTNLGRP_IPV6_PREFIX, read from the event loop, plus
a dump of the current addresses at start so a restart re-learns everything.
Messages are decoded by ``routerd.core.rtnetlink``.

On OpenWrt the kernel does not process RAs (odhcp6c does, in userspace), so
only addresses appear there; on a Linux host with accept_ra both do. How
RTM_NEWPREFIX carries the PIO flags depends on the kernel's version, read
once from ``uname``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from routerd.core import rtnetlink as rt
from routerd.core.tracker import AddressObserved, AddressRemoved, KernelPrefixObserved


@dataclass(frozen=True)
class LinkEvent:
    """A link appeared, changed or went away."""

    index: int
    name: str
    up: bool
    removed: bool


Event = AddressObserved | AddressRemoved | KernelPrefixObserved | LinkEvent


def to_event(kind: int, payload: bytes, names: dict[int, str], layout: rt.PrefixFlagsLayout) -> Event | None:
    """Translate one message for the tracker; None for what routerd does not use."""
    if kind in (rt.RTM_NEWADDR, rt.RTM_DELADDR):
        m = rt.decode_address(payload)
        if m is None or m.scope != rt.RT_SCOPE_UNIVERSE or m.ifindex not in names:
            return None
        name = names[m.ifindex]
        if kind == rt.RTM_DELADDR:
            return AddressRemoved(name, m.address)
        if m.flags & (rt.IFA_F_TENTATIVE | rt.IFA_F_DADFAILED):
            return None  # not usable yet (or never): the kernel will tell us again
        return AddressObserved(
            interface=name,
            address=m.address,
            valid=m.valid,
            preferred=m.preferred,
            deprecated=bool(m.flags & rt.IFA_F_DEPRECATED),
            permanent=bool(m.flags & rt.IFA_F_PERMANENT),
        )
    if kind == rt.RTM_NEWPREFIX:
        p = rt.decode_prefix(payload)
        if p.ifindex not in names:
            return None
        on_link, autonomous = layout.decode(p.flags)
        return KernelPrefixObserved(
            names[p.ifindex], p.prefix, p.valid, p.preferred, on_link=on_link, autonomous=autonomous
        )
    if kind in (rt.RTM_NEWLINK, rt.RTM_DELLINK):
        link = rt.decode_link(payload)
        return LinkEvent(link.ifindex, link.name, link.up, kind == rt.RTM_DELLINK)
    return None


class NetlinkMonitor:
    """The event socket; :meth:`dump_addresses` uses a socket of its own."""

    GROUPS = rt.groups_mask(rt.RTNLGRP_LINK, rt.RTNLGRP_IPV6_IFADDR, rt.RTNLGRP_IPV6_PREFIX)

    def __init__(self) -> None:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((0, self.GROUPS))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.layout = rt.prefix_flags_layout(os.uname().release)
        """How this kernel writes ``prefix_flags`` in RTM_NEWPREFIX."""

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> Iterator[tuple[int, bytes]]:
        """Every message waiting on the event socket."""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            yield from rt.split(data)

    @staticmethod
    def dump_addresses() -> Iterator[tuple[int, bytes]]:
        """RTM_GETADDR dump of the IPv6 addresses."""
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
            s.bind((0, 0))
            s.settimeout(5)
            s.send(rt.dump_request(rt.RTM_GETADDR, rt.AF_INET6, 1))
            while True:
                for kind, payload in rt.split(s.recv(1 << 16)):
                    if kind in (rt.NLMSG_DONE, rt.NLMSG_ERROR):
                        return
                    yield kind, payload

    def close(self) -> None:
        self.sock.close()
