"""The prefix tracker: observations and ``now`` in, the state of each interface out.

Pure: it never reads the clock. ``now`` is any monotonic time in seconds;
lifetimes are kept as deadlines on that clock.

Each prefix on an interface gathers *claims*, one per source that reported it
(an RA from router fe80::1, an address on the interface, a DHCPv6 delegation).
Its state follows from the claims by :data:`STATE_TABLE`; what changed is
named by :data:`TRANSITIONS`. Several routers on one link are combined
deterministically: the longest lifetime any of them gives wins, and ranking
never depends on arrival order.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from routerd.core.ra import INFINITE, PrefixInformation, RouterPreference
from routerd.core.wire import PrefixStatus, SourceKind

GLOBAL_UNICAST = IPv6Network("2000::/3")
UNIQUE_LOCAL = IPv6Network("fc00::/7")
TWO_HOURS = 7200
"""RFC 4862 §5.5.3 e: an unauthenticated RA cannot cut a valid lifetime below this."""
NEVER = -math.inf
"""A deadline that has always passed: the claim has no such part."""


@dataclass(frozen=True)
class TrackerConfig:
    """What the tracker accepts and how long it remembers (see docs/configuration.md)."""

    allow_ula: bool = False
    """Track unique-local prefixes (fc00::/7) too; by default only global unicast (2000::/3)."""
    max_prefix_length: int = 64
    """Longer prefixes cannot be renumbered into (a /128 is one address)."""
    max_prefixes: int = 16
    """Per interface; a flood of PIOs cannot grow memory without bound."""
    withdrawn_retention: float = 600.0
    """How long a prefix whose valid lifetime ran out stays listed as withdrawn."""
    include_static: bool = False
    """Count manually configured (permanent) addresses as prefixes."""


# -- observations ------------------------------------------------------------------------


@dataclass(frozen=True)
class RAObserved:
    """An accepted RA: the router's full set of prefix options at this moment."""

    interface: str
    router: IPv6Address
    preference: RouterPreference
    prefixes: tuple[PrefixInformation, ...]


@dataclass(frozen=True)
class KernelPrefixObserved:
    """RTM_NEWPREFIX: one PIO the kernel processed (it carries no router address)."""

    interface: str
    prefix: IPv6Network
    valid: int
    preferred: int
    on_link: bool
    autonomous: bool


@dataclass(frozen=True)
class AddressObserved:
    """RTM_NEWADDR for a global address, with its remaining lifetimes."""

    interface: str
    address: IPv6Interface
    valid: int
    preferred: int
    deprecated: bool = False
    permanent: bool = False


@dataclass(frozen=True)
class AddressRemoved:
    """RTM_DELADDR."""

    interface: str
    address: IPv6Interface


@dataclass(frozen=True)
class Delegated:
    """A DHCPv6 client's full set of delegated prefixes (prefix, valid, preferred).

    Prefixes it held before and are missing now are gone; an empty set means
    the lease ended (unbound, expired, stopped).
    """

    interface: str
    prefixes: tuple[tuple[IPv6Network, int, int], ...]


@dataclass(frozen=True)
class InterfaceRemoved:
    """The link went away: nothing on it is valid any more."""

    interface: str


Observation = (
    RAObserved | KernelPrefixObserved | AddressObserved | AddressRemoved | Delegated | InterfaceRemoved
)


# -- state -------------------------------------------------------------------------------


class Tier(enum.IntEnum):
    """How directly a prefix is vouched for; ranks prefixes of the same state."""

    ADVERTISED = 0
    """In the latest RA of a router, the kernel's RA processing, or a live delegation."""
    ADDRESS_ONLY = 1
    """Known only from an address on the interface."""
    LINGERING = 2
    """Its routers stopped advertising it; it lives on its remaining lifetime."""


LINGER_AFTER = 2
"""RAs in a row without a prefix before it counts as no longer advertised
(one RA may legitimately split its PIOs across two packets)."""

# (valid lifetime left, preferred lifetime left, withdrawn by its router) -> state.
# RFC 4862 §5.5.4: a valid address whose preferred lifetime ran out is deprecated;
# RFC 9096: a router announcing valid 0 withdraws the prefix.
STATE_TABLE: dict[tuple[bool, bool, bool], PrefixStatus] = {
    (True, True, False): PrefixStatus.PREFERRED,
    (True, False, False): PrefixStatus.DEPRECATED,
    (True, True, True): PrefixStatus.WITHDRAWN,
    (True, False, True): PrefixStatus.WITHDRAWN,
    (False, True, False): PrefixStatus.WITHDRAWN,
    (False, False, False): PrefixStatus.WITHDRAWN,
    (False, True, True): PrefixStatus.WITHDRAWN,
    (False, False, True): PrefixStatus.WITHDRAWN,
}


class Change(enum.StrEnum):
    """What happened to a prefix, for logs and counters."""

    APPEARED = "appeared"
    DEPRECATED = "deprecated"
    WITHDRAWN = "withdrawn"
    REVIVED = "revived"
    REMOVED = "removed"


# (state before, state after) -> change; None stands for "not listed".
TRANSITIONS: dict[tuple[PrefixStatus | None, PrefixStatus | None], Change] = {
    (None, PrefixStatus.PREFERRED): Change.APPEARED,
    (None, PrefixStatus.DEPRECATED): Change.APPEARED,
    (None, PrefixStatus.WITHDRAWN): Change.WITHDRAWN,
    (PrefixStatus.PREFERRED, PrefixStatus.DEPRECATED): Change.DEPRECATED,
    (PrefixStatus.PREFERRED, PrefixStatus.WITHDRAWN): Change.WITHDRAWN,
    (PrefixStatus.DEPRECATED, PrefixStatus.WITHDRAWN): Change.WITHDRAWN,
    (PrefixStatus.DEPRECATED, PrefixStatus.PREFERRED): Change.REVIVED,
    (PrefixStatus.WITHDRAWN, PrefixStatus.PREFERRED): Change.REVIVED,
    (PrefixStatus.WITHDRAWN, PrefixStatus.DEPRECATED): Change.REVIVED,
    (PrefixStatus.PREFERRED, None): Change.REMOVED,
    (PrefixStatus.DEPRECATED, None): Change.REMOVED,
    (PrefixStatus.WITHDRAWN, None): Change.REMOVED,
}


@dataclass(frozen=True)
class Claim:
    """One source's latest word on one prefix. Deadlines are ``now``-clock seconds; None = never.

    A PIO speaks for two things with separate lifetimes: the on-link entry
    (L=1, RFC 4861 §6.3.4) and the addresses autoconfigured from it (A=1,
    RFC 4862 §5.5.3). The prefix is valid while either lives.
    """

    kind: SourceKind
    direct_until: float | None
    """The valid lifetime as the source gave it: a PIO's on-link entry, an address's or a
    delegation's lifetime; NEVER for a PIO that never had L=1."""
    slaac_until: float | None
    """Autoconfigured addresses, held by the two-hour rule; NEVER unless a PIO had A=1."""
    preferred_until: float | None
    withdrawn: bool = False
    preference: int = 0
    missed: int = 0
    """Consecutive RAs from this router that left the prefix out."""

    @property
    def valid_until(self) -> float | None:
        return _later(self.direct_until, self.slaac_until)


ClaimKey = tuple[SourceKind, str]


@dataclass
class _Record:
    claims: dict[ClaimKey, Claim] = field(default_factory=dict)
    expired_at: float | None = None
    """Set once every claim ran out: the prefix is listed as withdrawn until retention ends."""


@dataclass(frozen=True)
class PrefixView:
    """A prefix as published at ``now``: lifetimes are remaining seconds, None = infinite."""

    prefix: IPv6Network
    state: PrefixStatus
    valid: int | None
    preferred: int | None
    sources: tuple[SourceKind, ...]
    routers: tuple[IPv6Address, ...]
    tier: Tier
    preference: int

    def identity(self) -> tuple[object, ...]:
        """What a consumer must hear about when it changes (lifetimes excluded)."""
        return (self.prefix, self.state, self.sources, self.routers)


@dataclass(frozen=True)
class Ignored:
    """An observation (or part of one) the tracker refused, and why."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Update:
    """The result of one call: interfaces whose published view changed, and what was refused."""

    changed: frozenset[str] = frozenset()
    changes: tuple[tuple[str, IPv6Network, Change], ...] = ()
    ignored: tuple[Ignored, ...] = ()


def _deadline(now: float, seconds: int) -> float | None:
    return None if seconds == INFINITE else now + seconds


def _remaining(now: float, deadline: float | None) -> int | None:
    if deadline is None:
        return None
    # Whole seconds, rounded up so that "still valid" never reads as 0; the
    # epsilon absorbs float rounding ((now + 7200) - now can be 7199.999...).
    return max(0, math.ceil(deadline - now - 1e-6))


def _later(a: float | None, b: float | None) -> float | None:
    """The later of two deadlines, where None (infinite) is latest."""
    if a is None or b is None:
        return None
    return max(a, b)


def two_hour_rule(now: float, current: float | None, received: int) -> float | None:
    """RFC 4862 §5.5.3 e: how far an unauthenticated RA may move a valid lifetime."""
    remaining = None if current is None else current - now
    if received == INFINITE:
        return None
    if received > TWO_HOURS or (remaining is not None and received > remaining):
        return now + received
    if remaining is not None and remaining <= TWO_HOURS:
        return current  # ignore the received valid lifetime
    return now + TWO_HOURS


class Tracker:
    """Per-interface prefix state, driven by observations and ``now``."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._ifaces: dict[str, dict[IPv6Network, _Record]] = {}
        self._last: dict[str, tuple[tuple[object, ...], ...]] = {}
        self.rejected: Counter[str] = Counter()
        """How many observations were refused, by reason (exported as metrics)."""

    # -- public API ------------------------------------------------------------------

    def interfaces(self) -> tuple[str, ...]:
        return tuple(sorted(self._ifaces))

    def observe(self, obs: Observation, now: float) -> Update:
        """Apply one observation; return what changed for consumers."""
        ignored: list[Ignored] = []
        if isinstance(obs, RAObserved):
            self._on_ra(obs, now, ignored)
        elif isinstance(obs, KernelPrefixObserved):
            self._on_pio(
                obs.interface, obs.prefix, obs.valid, obs.preferred, obs.on_link, obs.autonomous,
                key=(SourceKind.KERNEL_RA, ""), now=now, ignored=ignored,
            )  # fmt: skip
        elif isinstance(obs, AddressObserved):
            self._on_address(obs, now, ignored)
        elif isinstance(obs, AddressRemoved):
            key = (SourceKind.ADDRESS, str(obs.address.ip))
            self._drop_claims(obs.interface, lambda k: k == key, now)
        elif isinstance(obs, Delegated):
            self._on_delegated(obs, now, ignored)
        elif isinstance(obs, InterfaceRemoved):
            self._drop_claims(obs.interface, lambda k: True, now)
        self._expire(now)
        for i in ignored:
            self.rejected[i.reason] += 1
        return self._diff(now, tuple(ignored))

    def tick(self, now: float) -> Update:
        """Advance time: deprecate, withdraw and forget what ran out."""
        self._expire(now)
        return self._diff(now, ())

    def view(self, interface: str, now: float) -> tuple[PrefixView, ...]:
        """The interface's prefixes at ``now``, best first."""
        records = self._ifaces.get(interface, {})
        views = [self._view(p, r, now) for p, r in records.items()]
        return tuple(sorted(views, key=_rank))

    def next_deadline(self, now: float) -> float | None:
        """The earliest moment after ``now`` a state can change without a new observation."""
        best: float | None = None
        for records in self._ifaces.values():
            for rec in records.values():
                candidates: list[float] = []
                if rec.expired_at is not None:
                    candidates.append(rec.expired_at + self.config.withdrawn_retention)
                for c in rec.claims.values():
                    candidates += [d for d in (c.valid_until, c.preferred_until) if d is not None]
                for d in candidates:
                    if d > now and (best is None or d < best):
                        best = d
        return best

    # -- observation handlers ----------------------------------------------------------

    def _admissible(self, prefix: IPv6Network, ignored: list[Ignored]) -> bool:
        if prefix.prefixlen > self.config.max_prefix_length:
            ignored.append(
                Ignored("prefix-too-long", f"{prefix}: longer than /{self.config.max_prefix_length}")
            )
            return False
        if prefix.prefixlen == 0:
            ignored.append(Ignored("default-route-prefix", f"{prefix} is the whole address space"))
            return False
        if prefix.subnet_of(GLOBAL_UNICAST):
            return True
        if prefix.subnet_of(UNIQUE_LOCAL):
            if self.config.allow_ula:
                return True
            ignored.append(Ignored("ula-not-allowed", f"{prefix} is unique-local (allow_ula is off)"))
            return False
        ignored.append(Ignored("not-global-unicast", f"{prefix} is not global unicast (2000::/3)"))
        return False

    def _record(self, interface: str, prefix: IPv6Network, ignored: list[Ignored]) -> _Record | None:
        records = self._ifaces.setdefault(interface, {})
        rec = records.get(prefix)
        if rec is not None:
            return rec
        if len(records) >= self.config.max_prefixes:
            gone = [p for p, r in records.items() if r.expired_at is not None]
            if not gone:
                ignored.append(
                    Ignored(
                        "prefix-table-full",
                        f"{interface}: {prefix} would exceed {self.config.max_prefixes}",
                    )
                )
                return None
            del records[min(gone, key=lambda p: (records[p].expired_at or 0.0, p))]
        rec = records[prefix] = _Record()
        return rec

    def _on_pio(
        self,
        interface: str,
        prefix: IPv6Network,
        valid: int,
        preferred: int,
        on_link: bool,
        autonomous: bool,
        *,
        key: ClaimKey,
        now: float,
        ignored: list[Ignored],
        preference: int = 0,
    ) -> bool:
        """A Prefix Information option, from an RA or the kernel; True if it was taken."""
        if not (on_link or autonomous):
            # RFC 4861 §6.3.4: L=0 says nothing about on-link determination; RFC 4862 §5.5.3 a/b:
            # A=0 means no addresses from it. What remains (RFC 9762's P flag: hosts ask for their
            # own prefix by DHCPv6-PD) is no prefix of this link.
            ignored.append(Ignored("neither-on-link-nor-autonomous", f"{prefix}: a PIO with L=0 and A=0"))
            return False
        return self._on_lifetimes(
            interface, prefix, valid, preferred, key=key, now=now, ignored=ignored,
            direct=on_link, slaac=autonomous, preference=preference,
        )  # fmt: skip

    def _on_lifetimes(
        self,
        interface: str,
        prefix: IPv6Network,
        valid: int,
        preferred: int,
        *,
        key: ClaimKey,
        now: float,
        ignored: list[Ignored],
        direct: bool = True,
        slaac: bool = False,
        preference: int = 0,
    ) -> bool:
        """Update ``key``'s claim; True if it was taken.

        ``direct``: the valid lifetime counts as given (an on-link PIO, an address,
        a delegation); ``slaac``: it is held by the two-hour rule (a PIO with A=1).
        """
        if not (preferred >= 0 and 0 <= valid <= INFINITE):
            # Only a control-socket hook can say this (RAs and netlink carry u32s); never let it in.
            ignored.append(
                Ignored("lifetime-out-of-range", f"{prefix}: valid {valid}, preferred {preferred}")
            )
            return False
        if preferred > valid:  # INFINITE is the largest u32, so this covers it too
            # RFC 4862 §5.5.3 c: a preferred lifetime beyond the valid one voids the option.
            ignored.append(
                Ignored("preferred-exceeds-valid", f"{prefix}: preferred {preferred} > valid {valid}")
            )
            return False
        if not self._admissible(prefix, ignored):
            return False
        existing = self._ifaces.get(interface, {}).get(prefix)
        old = existing.claims.get(key) if existing else None
        if valid == 0 and old is None:
            # RFC 4862 §5.5.3 d: valid lifetime 0 for a prefix we do not hold is ignored.
            return False
        rec = self._record(interface, prefix, ignored)
        if rec is None:
            return False
        direct_until = old.direct_until if old else NEVER
        slaac_until = old.slaac_until if old else NEVER
        if direct:
            # RFC 4861 §6.3.4: the valid lifetime resets the on-link entry as received, no
            # two-hour rule; 0 times it out at once.
            direct_until = _deadline(now, valid)
        if slaac:
            # RFC 4862 §5.5.3 e: only addresses autoconfigured from an A=1 prefix are held by
            # the two-hour rule (an expired or missing entry takes the received lifetime).
            slaac_until = two_hour_rule(now, slaac_until, valid)
        valid_until = _later(direct_until, slaac_until)
        preferred_until = now if valid == 0 else _deadline(now, preferred)
        if valid_until is not None and preferred_until is not None:
            preferred_until = min(preferred_until, valid_until)
        elif valid_until is not None:  # infinite preferred but a finite (clamped) valid
            preferred_until = valid_until
        rec.claims[key] = Claim(
            kind=key[0],
            direct_until=direct_until,
            slaac_until=slaac_until,
            preferred_until=preferred_until,
            withdrawn=valid == 0,
            preference=preference,
        )
        rec.expired_at = None
        return True

    def _on_ra(self, obs: RAObserved, now: float, ignored: list[Ignored]) -> None:
        origin = str(obs.router)
        pref = {RouterPreference.HIGH: 1, RouterPreference.MEDIUM: 0, RouterPreference.LOW: -1}[
            obs.preference
        ]
        advertised = set()
        for pio in obs.prefixes:
            # Only an option that was taken counts as advertising the prefix.
            if self._on_pio(
                obs.interface, pio.prefix, pio.valid_lifetime, pio.preferred_lifetime,
                pio.on_link, pio.autonomous,
                key=(SourceKind.RA, origin), now=now, ignored=ignored, preference=pref,
            ):  # fmt: skip
                advertised.add(pio.prefix)
        if not obs.prefixes:
            return  # an RA without PIOs (a router-lifetime refresh) says nothing about prefixes
        for prefix, rec in self._ifaces.get(obs.interface, {}).items():
            claim = rec.claims.get((SourceKind.RA, origin))
            if claim is not None and prefix not in advertised:
                rec.claims[(SourceKind.RA, origin)] = replace(claim, missed=claim.missed + 1)
            elif claim is not None and claim.missed:
                rec.claims[(SourceKind.RA, origin)] = replace(claim, missed=0)

    def _on_address(self, obs: AddressObserved, now: float, ignored: list[Ignored]) -> None:
        if obs.permanent and not self.config.include_static:
            return
        preferred = 0 if obs.deprecated else obs.preferred
        key = (SourceKind.ADDRESS, str(obs.address.ip))
        # The kernel already applied RFC 4862 to these lifetimes.
        self._on_lifetimes(
            obs.interface, obs.address.network, obs.valid, preferred, key=key, now=now, ignored=ignored
        )

    def _on_delegated(self, obs: Delegated, now: float, ignored: list[Ignored]) -> None:
        key: ClaimKey = (SourceKind.DHCPV6_PD, "")
        listed = set()
        for prefix, valid, preferred in obs.prefixes:
            listed.add(prefix)
            self._on_lifetimes(obs.interface, prefix, valid, preferred, key=key, now=now, ignored=ignored)
        for prefix, rec in self._ifaces.get(obs.interface, {}).items():
            claim = rec.claims.get(key)
            if claim is not None and prefix not in listed:
                # The lease no longer carries it: the server took it back.
                rec.claims[key] = replace(claim, withdrawn=True, preferred_until=now, direct_until=now)

    def _drop_claims(self, interface: str, which: Callable[[ClaimKey], bool], now: float) -> None:
        for rec in self._ifaces.get(interface, {}).values():
            for key in [k for k in rec.claims if which(k)]:
                del rec.claims[key]
            if not rec.claims and rec.expired_at is None:
                rec.expired_at = now

    # -- time ----------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        for interface, records in list(self._ifaces.items()):
            for prefix, rec in list(records.items()):
                for key, claim in list(rec.claims.items()):
                    if claim.valid_until is not None and claim.valid_until <= now:
                        del rec.claims[key]
                if not rec.claims and rec.expired_at is None:
                    rec.expired_at = now
                if rec.expired_at is not None and now >= rec.expired_at + self.config.withdrawn_retention:
                    del records[prefix]
            if not records:
                del self._ifaces[interface]

    # -- views ---------------------------------------------------------------------------

    def _view(self, prefix: IPv6Network, rec: _Record, now: float) -> PrefixView:
        claims = list(rec.claims.values())
        valid_until: float | None = 0.0
        preferred_until: float | None = 0.0
        for c in claims:
            valid_until = _later(valid_until, c.valid_until)
            if not c.withdrawn:
                preferred_until = _later(preferred_until, c.preferred_until)
        if not claims:
            valid_until = preferred_until = now  # expired: listed as withdrawn until retention ends
        authority = [c for c in claims if c.kind is not SourceKind.ADDRESS]
        withdrawn = bool(authority) and all(c.withdrawn for c in authority)
        # State follows the published whole seconds, so the two never disagree.
        valid = _remaining(now, valid_until)
        preferred = _remaining(now, preferred_until)
        valid_left = valid is None or valid > 0
        preferred_left = preferred is None or preferred > 0
        state = STATE_TABLE[(valid_left, preferred_left and valid_left, withdrawn)]
        ra_claims = [c for c in claims if c.kind is SourceKind.RA]
        if any(c.kind is not SourceKind.ADDRESS and c.missed < LINGER_AFTER for c in claims):
            tier = Tier.ADVERTISED
        elif ra_claims:
            tier = Tier.LINGERING
        else:
            tier = Tier.ADDRESS_ONLY
        routers = tuple(sorted(IPv6Address(o) for (k, o) in rec.claims if k is SourceKind.RA))
        return PrefixView(
            prefix=prefix,
            state=state,
            valid=valid,
            preferred=preferred if state is PrefixStatus.PREFERRED else 0,
            sources=tuple(sorted({c.kind for c in claims} or {SourceKind.ADDRESS}, key=_source_order)),
            routers=routers,
            tier=tier,
            preference=max((c.preference for c in ra_claims), default=0),
        )

    def _diff(self, now: float, ignored: tuple[Ignored, ...]) -> Update:
        """Compare with what the last call reported; remember the new identities."""
        after = {iface: tuple(v.identity() for v in self.view(iface, now)) for iface in self._ifaces}
        changed = frozenset(i for i in set(self._last) | set(after) if self._last.get(i) != after.get(i))
        changes: list[tuple[str, IPv6Network, Change]] = []
        for iface in sorted(changed):
            old = {ident[0]: ident[1] for ident in self._last.get(iface, ())}
            new = {ident[0]: ident[1] for ident in after.get(iface, ())}
            for prefix in sorted(set(old) | set(new)):  # type: ignore[type-var]
                transition = TRANSITIONS.get((old.get(prefix), new.get(prefix)))  # type: ignore[arg-type]
                if transition is not None:
                    changes.append((iface, prefix, transition))  # type: ignore[arg-type]
        self._last = after
        return Update(changed=changed, changes=tuple(changes), ignored=ignored)


_SOURCE_ORDER = {
    SourceKind.RA: 0,
    SourceKind.KERNEL_RA: 1,
    SourceKind.DHCPV6_PD: 2,
    SourceKind.ADDRESS: 3,
}


def _source_order(kind: SourceKind) -> int:
    return _SOURCE_ORDER[kind]


_STATE_ORDER = {PrefixStatus.PREFERRED: 0, PrefixStatus.DEPRECATED: 1, PrefixStatus.WITHDRAWN: 2}


def _rank(v: PrefixView) -> tuple[int, int, int, int]:
    """Best first: state, then how directly vouched for, router preference, then address order."""
    return (_STATE_ORDER[v.state], int(v.tier), -v.preference, int(v.prefix.network_address))
