"""DHCPv6-PD client hooks: what odhcp6c, dhcpcd and OpenWrt's ubus say was delegated.

Each parser returns the client's *full* current set of delegated prefixes as
(prefix, valid, preferred) tuples; an empty set means the lease ended. Bad
input raises :class:`HookError` naming the variable and value.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv6Network
from typing import Any

INFINITE = 0xFFFFFFFF
Delegation = tuple[IPv6Network, int, int]

# odhcp6c calls its script with these states (odhcp6c.c, script.c).
ODHCP6C_HOLDING = frozenset({"bound", "updated", "rebound", "ra-updated", "informed"})
ODHCP6C_ENDED = frozenset({"unbound", "stopped"})
# dhcpcd's $reason values for IPv6 (dhcpcd-run-hooks(8)).
DHCPCD_HOLDING = frozenset({"BOUND6", "RENEW6", "REBIND6", "REBOOT6", "DELEGATED6", "INFORM6"})
DHCPCD_ENDED = frozenset({"EXPIRE6", "RELEASE6", "STOP6", "STOPPED", "DEPARTED", "NOCARRIER"})


class HookError(ValueError):
    """A hook's input that cannot be understood."""


def _lifetime(raw: str, what: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise HookError(f"{what} {raw!r} is not a number of seconds") from None
    if not 0 <= value <= INFINITE:
        raise HookError(f"{what} {value} is outside 0..4294967295")
    return value


def _prefix(raw: str, what: str) -> IPv6Network:
    try:
        return IPv6Network(raw, strict=False)
    except ValueError:
        raise HookError(f"{what} {raw!r} is not an IPv6 prefix") from None


def delegation(prefix: object, valid: object, preferred: object, what: str) -> Delegation:
    """One (prefix, valid, preferred) from untyped input (a hook's JSON), checked like the parsers below."""
    return (
        _prefix(str(prefix), f"{what} prefix"),
        _lifetime(str(valid), f"{what} valid lifetime"),
        _lifetime(str(preferred), f"{what} preferred lifetime"),
    )


def odhcp6c(state: str, env: Mapping[str, str]) -> tuple[Delegation, ...] | None:
    """odhcp6c: ``PREFIXES="2001:db8::/56,3600,7200[,class=..,excluded=..] ..."`` (preferred, then valid).

    Returns None for states that say nothing about delegations (started, ...).
    """
    if state in ODHCP6C_ENDED:
        return ()
    if state not in ODHCP6C_HOLDING:
        return None
    out = []
    for entry in env.get("PREFIXES", "").split():
        fields = entry.split(",")
        if len(fields) < 3:
            raise HookError(f"PREFIXES entry {entry!r}: expected prefix/len,preferred,valid")
        prefix = _prefix(fields[0], "PREFIXES prefix")
        preferred = _lifetime(fields[1], "PREFIXES preferred lifetime")
        valid = _lifetime(fields[2], "PREFIXES valid lifetime")
        out.append((prefix, valid, preferred))
    return tuple(out)


def dhcpcd(env: Mapping[str, str]) -> tuple[Delegation, ...] | None:
    """dhcpcd: ``$reason`` and ``new_dhcp6_ia_pd<i>_prefix<j>{,_length,_pltime,_vltime}``."""
    reason = env.get("reason", "")
    if reason in DHCPCD_ENDED:
        return ()
    if reason not in DHCPCD_HOLDING:
        return None
    out = []
    for key in sorted(env):
        if not key.startswith("new_dhcp6_ia_pd") or "_prefix" not in key:
            continue
        if not key.rpartition("_prefix")[2].isdigit():
            continue
        length = env.get(f"{key}_length")
        if length is None:
            raise HookError(f"{key} is set but {key}_length is not")
        prefix = _prefix(f"{env[key]}/{length}", key)
        valid = _lifetime(env.get(f"{key}_vltime", ""), f"{key}_vltime")
        preferred = _lifetime(env.get(f"{key}_pltime", ""), f"{key}_pltime")
        out.append((prefix, valid, preferred))
    return tuple(out)


def ubus_status(doc: Mapping[str, Any]) -> tuple[Delegation, ...]:
    """OpenWrt: ``ubus call network.interface.<name> status`` -> ``ipv6-prefix[]``."""
    out = []
    for i, p in enumerate(doc.get("ipv6-prefix") or []):
        try:
            prefix = _prefix(f"{p['address']}/{p['mask']}", f"ipv6-prefix[{i}]")
            valid = _lifetime(str(p.get("valid", INFINITE)), f"ipv6-prefix[{i}].valid")
            preferred = _lifetime(str(p.get("preferred", INFINITE)), f"ipv6-prefix[{i}].preferred")
        except (KeyError, TypeError) as e:
            raise HookError(f"ipv6-prefix[{i}] lacks {e}") from None
        out.append((prefix, valid, preferred))
    return tuple(out)
