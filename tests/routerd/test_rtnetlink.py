"""rtnetlink decoding (routerd/core/rtnetlink.py): captured vectors, fuzzing, and the kernel as the reference.

routerd decodes netlink itself to stay small; these tests decode what the
running kernel sends with both routerd and pyroute2 (0.7.9 in the openwrt tox
environment, 0.9 in the main one) and require the same answer, and check the
fields pyroute2 leaves to the reader against what went in: ``ip addr`` for a
point-to-point address, the PIO flags of injected RAs for RTM_NEWPREFIX.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from routerd.adapters.netlink import NetlinkMonitor, to_event
from routerd.core import ra
from routerd.core import rtnetlink as rt
from routerd.core.tracker import AddressObserved, KernelPrefixObserved
from tests.ground.netlab import Lab, inside, run

# Captured from Linux 6.18 (radvd: 2001:db8:a::/64, valid 3600, preferred 1800), after the nlmsghdr.
KERNEL_6_18 = bytes.fromhex(
    "0a000000"  # family AF_INET6, pad1, pad2
    "02000000"  # ifindex 2
    "03" "40" "c0" "00"  # type 3 (PIO), length 64, flags = raw PIO byte L|A (the 2023 meaning), pad3
    "1400" "0100" "20010db8000a00000000000000000000"  # PREFIX_ADDRESS (20 bytes), 2001:db8:a::
    "0c00" "0200" "08070000" "100e0000"  # PREFIX_CACHEINFO: preferred 1800, valid 3600
)  # fmt: skip


def test_decodes_a_captured_kernel_message() -> None:
    msg = rt.decode_prefix(KERNEL_6_18)
    assert msg == rt.PrefixMessage(2, IPv6Network("2001:db8:a::/64"), 0xC0, 1800, 3600)


PIO, IF_PREFIX = rt.PrefixFlagsLayout.PIO, rt.PrefixFlagsLayout.IF_PREFIX


@pytest.mark.parametrize(
    ("release", "layout"),
    [
        ("6.18.44-fc-v657", PIO),
        ("6.7.0", PIO),
        ("6.6.8", PIO),  # the stable releases that took the change (20 December 2023)
        ("6.6.7", IF_PREFIX),
        ("6.1.69-1+deb12", PIO),
        ("6.1.68", IF_PREFIX),
        ("5.15.144", PIO),
        ("5.10.205", PIO),
        ("5.4.265-openwrt", PIO),
        ("5.4.264", IF_PREFIX),
        ("6.5.13", IF_PREFIX),  # a series that ended before the change
        ("4.19.325", IF_PREFIX),
        ("5.15.0-91-generic", IF_PREFIX),  # a frozen number: the decoder copes with a backport
        ("", IF_PREFIX),
    ],
)
def test_the_prefix_flags_layout_follows_the_kernel_release(
    release: str, layout: rt.PrefixFlagsLayout
) -> None:
    assert rt.prefix_flags_layout(release) is layout


@pytest.mark.parametrize(
    ("layout", "flags", "expected"),
    [
        (IF_PREFIX, 0x01 | 0x02, (True, True)),  # IF_PREFIX_ONLINK | IF_PREFIX_AUTOCONF
        (IF_PREFIX, 0x01, (True, False)),
        (IF_PREFIX, 0x02, (False, True)),
        (IF_PREFIX, 0x00, (False, False)),
        (IF_PREFIX, 0xC0, (True, True)),  # bits the old layout never writes: a backported kernel
        (IF_PREFIX, 0xC8, (True, True)),
        (PIO, 0xC0, (True, True)),  # L and A
        (PIO, 0xC8, (True, True)),  # L, A and a reserved bit the router set
        (PIO, 0x80, (True, False)),
        (PIO, 0x48, (False, True)),
        (PIO, 0x50, (False, True)),  # A and RFC 9762's P flag
        (PIO, 0x03, (False, False)),  # reserved bits only: not IF_PREFIX_* on this layout
        (PIO, 0x00, (False, False)),
    ],
)
def test_prefix_flags_by_layout(
    layout: rt.PrefixFlagsLayout, flags: int, expected: tuple[bool, bool]
) -> None:
    assert layout.decode(flags) == expected


def test_truncated_or_incomplete_prefix_messages_raise_our_error() -> None:
    for data in (KERNEL_6_18[:8], KERNEL_6_18[:12], KERNEL_6_18[:30], b"\x02" + KERNEL_6_18[1:]):
        with pytest.raises(rt.NetlinkError):
            rt.decode_prefix(data)


@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_our_error(data: bytes) -> None:
    with contextlib.suppress(rt.NetlinkError):
        rt.decode_prefix(data)


u32 = st.integers(0, 2**32 - 1)


@given(st.integers(0, 2**31 - 1), st.integers(0, 2**128 - 1), st.integers(0, 128), u32, u32,
       st.integers(0, 255))  # fmt: skip
def test_decode_inverts_encode(ifindex: int, addr: int, plen: int, pref: int, valid: int, flags: int) -> None:
    msg = rt.PrefixMessage(ifindex, IPv6Network((IPv6Address(addr), plen), strict=False), flags, pref, valid)
    assert rt.decode_prefix(rt.encode_prefix(msg)) == msg


def test_groups_mask() -> None:
    assert (
        rt.groups_mask(rt.RTNLGRP_LINK, rt.RTNLGRP_IPV6_IFADDR, rt.RTNLGRP_IPV6_PREFIX)
        == 0x1 | 0x100 | 0x20000
    )


def _dump(kind: int, family: int) -> list[tuple[int, bytes, bytes]]:
    """(type, payload, whole message) from a dump of the running kernel."""
    out = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        s.settimeout(5)
        s.send(rt.dump_request(kind, family, 7))
        while True:
            data = s.recv(1 << 16)
            i = 0
            for t, payload in rt.split(data):
                if t in (rt.NLMSG_DONE, rt.NLMSG_ERROR):
                    return out
                length = 16 + len(payload)
                out.append((t, payload, data[i : i + length]))
                i += (length + 3) & ~3


def test_addresses_decode_like_pyroute2_on_kernel_messages() -> None:
    msgs = [(t, p, w) for t, p, w in _dump(rt.RTM_GETADDR, socket.AF_INET6) if t == rt.RTM_NEWADDR]
    assert msgs, "the kernel reported no IPv6 address (not even ::1)"
    for _t, payload, whole in msgs:
        ours = rt.decode_address(payload)
        ref = ifaddrmsg(whole)
        ref.decode()
        assert ours is not None
        cache = ref.get_attr("IFA_CACHEINFO")
        local = ref.get_attr("IFA_LOCAL") or ref.get_attr("IFA_ADDRESS")  # IFA_ADDRESS is a peer's
        assert ours.address == IPv6Interface(f"{local}/{ref['prefixlen']}")
        assert (ours.ifindex, ours.scope) == (ref["index"], ref["scope"])
        assert ours.flags == (ref.get_attr("IFA_FLAGS") or ref["flags"])
        assert (ours.preferred, ours.valid) == (cache["ifa_preferred"], cache["ifa_valid"])


def test_links_decode_like_pyroute2_on_kernel_messages() -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        s.settimeout(5)
        # RTM_GETLINK (18) with an ifinfomsg body of 16 zero bytes.
        s.send(rt._NLMSGHDR.pack(32, 18, rt.NLM_F_REQUEST | rt.NLM_F_DUMP, 9, 0) + bytes(16))
        data = s.recv(1 << 16)
    t, payload = next(rt.split(data))
    assert t == rt.RTM_NEWLINK
    ref = ifinfmsg(data[: 16 + len(payload)])
    ref.decode()
    ours = rt.decode_link(payload)
    assert (ours.ifindex, ours.name, ours.up) == (
        ref["index"],
        ref.get_attr("IFLA_IFNAME"),
        bool(ref["flags"] & 1),
    )
    assert ours.name == socket.if_indextoname(ours.ifindex)


def test_the_monitor_dump_sees_loopback() -> None:
    got = [rt.decode_address(p) for t, p in NetlinkMonitor.dump_addresses() if t == rt.RTM_NEWADDR]
    assert any(a is not None and a.address.ip == IPv6Address("::1") for a in got)


def test_a_new_address_arrives_as_an_event(tmp_path: object) -> None:
    from tests.ground.netlab import inside, run
    from tests.ground.require import require_root

    require_root()
    ns = f"dp-{os.getpid()}-nl"
    run(["ip", "netns", "add", ns])
    try:
        with inside(ns):
            mon = NetlinkMonitor()
        run(["ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0"], ns)
        run(["ip", "link", "set", "a0", "up"], ns)
        run(["ip", "-6", "addr", "add", "2001:db8:77::1/64", "dev", "a0", "nodad",
             "valid_lft", "600", "preferred_lft", "300"], ns)  # fmt: skip
        want = IPv6Interface("2001:db8:77::1/64")
        addr = None
        deadline = time.monotonic() + 5
        while addr is None:
            # A blocking recv bounded by what is left: the address must arrive within 5 s in all.
            mon.sock.settimeout(max(0.001, deadline - time.monotonic()))
            for t, p in rt.split(mon.sock.recv(1 << 16)):
                a = rt.decode_address(p) if t == rt.RTM_NEWADDR else None
                addr = a if a is not None and a.address == want else addr
        assert 590 <= addr.valid <= 600 and 290 <= addr.preferred <= 300
        mon.close()
    finally:
        run(["ip", "netns", "del", ns], check=False)


def test_a_point_to_point_address_decodes_as_the_local_one(lab: Lab) -> None:
    # ip(8): "local" is this host's address, "address" the peer's (IFA_LOCAL, IFA_ADDRESS).
    run(["ip", "-6", "addr", "add", "2001:db8:5::1", "peer", "2001:db8:6::2/64", "dev", lab.host_if,
         "nodad", "valid_lft", "600", "preferred_lft", "300"], lab.host)  # fmt: skip
    (shown,) = [a for a in lab.addresses(lab.host, lab.host_if) if a.get("scope") == "global"]
    assert (shown["local"], shown["address"], shown["prefixlen"]) == ("2001:db8:5::1", "2001:db8:6::2", 64)
    with inside(lab.host):
        index = socket.if_nametoindex(lab.host_if)
        dumped = [p for t, p in NetlinkMonitor.dump_addresses() if t == rt.RTM_NEWADDR]
    global_here = [
        (a, p) for p in dumped if (a := rt.decode_address(p)) and a.ifindex == index and a.scope == 0
    ]
    ((addr, payload),) = global_here
    assert addr.address == IPv6Interface(f"{shown['local']}/{shown['prefixlen']}")
    # What the tracker is told: the prefix this host has an address in, not the peer's
    # (the layout matters only for RTM_NEWPREFIX).
    event = to_event(rt.RTM_NEWADDR, payload, {index: lab.host_if}, rt.PrefixFlagsLayout.PIO)
    assert isinstance(event, AddressObserved) and event.address.network == IPv6Network("2001:db8:5::/64")


def pio_flagged(prefix: str, flags: int) -> ra.RawOption:
    """A PIO with exactly this flag byte, reserved bits included (PrefixInformation sets only L, A, R, P)."""
    body = bytearray(ra.PrefixInformation(IPv6Network(prefix), 3600, 1800).body())
    body[1] = flags
    return ra.RawOption(ra.PrefixInformation.TYPE, bytes(body))


SENT = {  # prefix -> the PIO's flag byte
    "2001:db8:c0::/64": 0xC0,  # L=1 A=1
    "2001:db8:80::/64": 0x80,  # L=1 A=0
    "2001:db8:40::/64": 0x40,  # L=0 A=1
    "2001:db8:c8::/64": 0xC8,  # L=1 A=1 and a reserved bit (the old heuristic read neither)
    "2001:db8:88::/64": 0x88,  # L=1 A=0 and a reserved bit
    "2001:db8:48::/64": 0x48,  # L=0 A=1 and a reserved bit
    "2001:db8:10::/64": 0x10,  # RFC 9762's P only
    "2001:db8::/64": 0x00,  # no flag at all
}


def test_kernel_prefix_messages_carry_the_flags_the_router_sent(lab: Lab) -> None:
    lab.sysctl(lab.host, f"net.ipv6.conf.{lab.host_if}.accept_ra", 2)
    with inside(lab.host):
        mon = NetlinkMonitor()
        index = socket.if_nametoindex(lab.host_if)
    try:
        lab.inject_ra(
            ra.RouterAdvertisement(options=tuple(pio_flagged(p, f) for p, f in SENT.items())).pack()
        )
        raw: dict[str, int] = {}
        seen: dict[str, KernelPrefixObserved] = {}
        deadline = time.monotonic() + 10
        while (
            set(seen) != set(SENT)
            and select.select([mon.sock], [], [], max(0, deadline - time.monotonic()))[0]
        ):
            for kind, payload in mon.read():
                if kind == rt.RTM_NEWPREFIX:
                    event = to_event(kind, payload, {index: lab.host_if}, mon.layout)
                    assert isinstance(event, KernelPrefixObserved)
                    seen[str(event.prefix)] = event
                    raw[str(event.prefix)] = rt.decode_prefix(payload).flags
    finally:
        mon.close()
    # addrconf_prefix_rcv() notifies every /64 PIO it takes, whatever its flags, L=0 A=0 included.
    assert set(seen) == set(SENT)
    for prefix, flags in SENT.items():
        if mon.layout is rt.PrefixFlagsLayout.PIO:
            assert raw[prefix] == flags  # the byte as the router sent it
        else:
            assert raw[prefix] == bool(flags & 0x80) | bool(flags & 0x40) << 1  # IF_PREFIX_*
        assert (seen[prefix].on_link, seen[prefix].autonomous) == (bool(flags & 0x80), bool(flags & 0x40))
