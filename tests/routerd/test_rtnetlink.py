"""rtnetlink decoding (routerd/core/rtnetlink.py): captured vectors, fuzzing, and pyroute2 as the reference.

routerd decodes netlink itself to stay small; these tests decode what the
running kernel sends with both routerd and pyroute2 (0.7.9 in the openwrt tox
environment, 0.9 in the main one) and require the same answer.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from routerd.adapters.netlink import NetlinkMonitor
from routerd.core import rtnetlink as rt

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
    assert msg == rt.PrefixMessage(2, IPv6Network("2001:db8:a::/64"), True, True, 1800, 3600)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (0x01 | 0x02, (True, True)),  # before 2023: IF_PREFIX_ONLINK | IF_PREFIX_AUTOCONF
        (0x01, (True, False)),
        (0x80 | 0x40, (True, True)),  # since 2023: the PIO's L and A bits
        (0x40 | 0x10, (False, True)),  # A and RFC 9762's P flag
        (0x00, (False, False)),
    ],
)
def test_both_meanings_of_prefix_flags(flags: int, expected: tuple[bool, bool]) -> None:
    assert rt.decode_prefix_flags(flags) == expected


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
       st.sampled_from([0xC0, 0x80, 0x40, 0x03, 0x01]))  # fmt: skip
def test_decode_inverts_encode(ifindex: int, addr: int, plen: int, pref: int, valid: int, flags: int) -> None:
    on_link, auto = rt.decode_prefix_flags(flags)
    msg = rt.PrefixMessage(
        ifindex, IPv6Network((IPv6Address(addr), plen), strict=False), on_link, auto, pref, valid
    )
    assert rt.decode_prefix(rt.encode_prefix(msg, flags)) == msg


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
        assert ours.address == IPv6Interface(f"{ref.get_attr('IFA_ADDRESS')}/{ref['prefixlen']}")
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
