"""Network labs: RAs from radvd and hand-injected RAs cross from router to host.

The host side listens with routerd's own raw-socket adapter, so these tests
also show the socket options (filter, hop limit ancillary data, device
binding) work on a real kernel.
"""

from __future__ import annotations

import select
import time
from ipaddress import IPv6Address, IPv6Network

import pytest

from routerd.adapters.rawsock import RASocket, Received
from routerd.core import ra
from tests.ground.netlab import AdvPrefix, Lab, inside

pytestmark = pytest.mark.lab


def next_ra(sock: RASocket, timeout: float = 15.0) -> tuple[Received, ra.RouterAdvertisement | None]:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        select.select([sock], [], [], left)
        got = sock.receive()
        if got is not None:
            try:
                return got, ra.parse(got.data)
            except ra.RAParseError:
                return got, None
    raise TimeoutError("no RA arrived")


def prefixes_of(adv: ra.RouterAdvertisement | None) -> set[IPv6Network]:
    assert adv is not None
    return {p.prefix for p in adv.prefixes}


def test_radvd_ra_arrives_and_the_prefix_changes_at_run_time(lab: Lab) -> None:
    with inside(lab.host):
        sock = RASocket(lab.host_if)
    with sock:
        lab.start_radvd([AdvPrefix("2001:db8:1::/64", valid=3600, preferred=1800)])
        got, adv = next_ra(sock)
        assert prefixes_of(adv) == {IPv6Network("2001:db8:1::/64")}
        assert got.hop_limit == 255
        assert got.source == IPv6Address(lab.router_ll)
        assert adv is not None and adv.prefixes[0].valid_lifetime == 3600

        lab.advertise(
            [
                AdvPrefix("2001:db8:1::/64", valid=0, preferred=0),
                AdvPrefix("2001:db8:2::/64", valid=7200, preferred=3600),
            ]
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, adv = next_ra(sock)
            if IPv6Network("2001:db8:2::/64") in prefixes_of(adv):
                break
        else:
            pytest.fail("radvd never advertised the new prefix after SIGHUP")
        assert adv is not None
        lifetimes = {p.prefix: (p.valid_lifetime, p.preferred_lifetime) for p in adv.prefixes}
        assert lifetimes == {
            IPv6Network("2001:db8:1::/64"): (0, 0),
            IPv6Network("2001:db8:2::/64"): (7200, 3600),
        }


def test_solicitation_gets_an_answer_before_the_periodic_ra(lab: Lab) -> None:
    lab.start_radvd([AdvPrefix("2001:db8:5::/64")], interval=(30, 40))
    with inside(lab.host):
        sock = RASocket(lab.host_if)
    with sock:
        next_ra(sock, timeout=10)  # radvd's initial burst
        time.sleep(0.5)
        while sock.receive() is not None:
            pass
        sock.solicit()
        started = time.monotonic()
        _, adv = next_ra(sock, timeout=10)
        assert prefixes_of(adv) == {IPv6Network("2001:db8:5::/64")}
        assert time.monotonic() - started < 10  # the periodic RA would take >= 30 s


def test_hand_injected_ras_arrive_with_their_hop_limit(lab: Lab) -> None:
    pio = ra.PrefixInformation(IPv6Network("2001:db8:99::/64"), valid_lifetime=600, preferred_lifetime=300)
    packet = ra.RouterAdvertisement(options=(pio,)).pack()
    with inside(lab.host):
        sock = RASocket(lab.host_if)
    with sock:
        lab.inject_ra(packet)
        got, adv = next_ra(sock)
        assert adv == ra.RouterAdvertisement(options=(pio,))
        assert got.hop_limit == 255

        lab.inject_ra(packet, hop_limit=64)
        got, adv = next_ra(sock)
        assert got.hop_limit == 64
        with pytest.raises(ra.RAError) as err:
            ra.accept(got.data, hop_limit=got.hop_limit, source=got.source)
        assert err.value.reason == "hop-limit"

        lab.add_address(lab.router, lab.router_if, "2001:db8:ffff::1/64")
        lab.inject_ra(packet, source="2001:db8:ffff::1")
        got, _ = next_ra(sock)
        assert got.source == IPv6Address("2001:db8:ffff::1")

        lab.inject_ra(packet[:12])  # truncated: still delivered to a raw socket
        got, adv = next_ra(sock)
        assert len(got.data) == 12 and adv is None
        with pytest.raises(ra.RAParseError) as err:
            ra.parse(got.data)
        assert err.value.reason == "truncated"
