"""DHCPv6 client hook parsing (routerd/core/dhcpv6.py)."""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest

from routerd.core import dhcpv6

P56 = IPv6Network("2001:db8:100::/56")


def test_odhcp6c_prefixes() -> None:
    second = "2001:db8:200::/60,0,300,class=wan6,excluded=2001:db8:200::/64"
    env = {"PREFIXES": f"2001:db8:100::/56,3600,7200 {second}"}
    assert dhcpv6.odhcp6c("bound", env) == (
        (P56, 7200, 3600),
        (IPv6Network("2001:db8:200::/60"), 300, 0),
    )
    assert dhcpv6.odhcp6c("unbound", env) == ()
    assert dhcpv6.odhcp6c("started", env) is None
    with pytest.raises(dhcpv6.HookError, match="expected prefix/len,preferred,valid"):
        dhcpv6.odhcp6c("updated", {"PREFIXES": "2001:db8::/56"})
    with pytest.raises(dhcpv6.HookError, match="not a number of seconds"):
        dhcpv6.odhcp6c("updated", {"PREFIXES": "2001:db8::/56,soon,7200"})


def test_dhcpcd_variables() -> None:
    env = {
        "reason": "BOUND6",
        "new_dhcp6_ia_pd1_prefix1": "2001:db8:100::",
        "new_dhcp6_ia_pd1_prefix1_length": "56",
        "new_dhcp6_ia_pd1_prefix1_pltime": "3600",
        "new_dhcp6_ia_pd1_prefix1_vltime": "7200",
    }
    assert dhcpv6.dhcpcd(env) == ((P56, 7200, 3600),)
    assert dhcpv6.dhcpcd({**env, "reason": "EXPIRE6"}) == ()
    assert dhcpv6.dhcpcd({**env, "reason": "CARRIER"}) is None
    with pytest.raises(dhcpv6.HookError, match="_length is not"):
        dhcpv6.dhcpcd({"reason": "RENEW6", "new_dhcp6_ia_pd1_prefix1": "2001:db8::"})


def test_ubus_status() -> None:
    doc = {"ipv6-prefix": [{"address": "2001:db8:100::", "mask": 56, "preferred": 3600, "valid": 7200}]}
    assert dhcpv6.ubus_status(doc) == ((P56, 7200, 3600),)
    assert dhcpv6.ubus_status({}) == ()
    with pytest.raises(dhcpv6.HookError, match="lacks"):
        dhcpv6.ubus_status({"ipv6-prefix": [{"mask": 56}]})
