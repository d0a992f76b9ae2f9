"""The Service planner for HA mode: old addresses stay, DNS moves to the new prefix. Pure.

A LoadBalancer Service opts in with ``dynamic-prefix.io/name`` (and
``dynamic-prefix.io/service-address-range``, else ``.../address-range``). Its
*host offset* inside the range is read from whichever prefix -- current or
draining -- its present IPv6 address belongs to (the Go operator computed it
against the current prefix while the Service still held an old address, and
got garbage). The Service then asks for that offset in the current prefix and
in every draining one; DNS (external-dns) gets the current address only, and
when the range does not fit the current prefix the Service is reported, not
pointed at a draining one. ``dynamic-prefix.io/host-suffix`` pins the host part
instead (``::10`` in every prefix).

LB-IPAM (Cilium's and MetalLB's alike) allocates exactly the addresses the
annotation lists and drops every other allocation. So a Service whose
annotation lists addresses but no IPv6 one never gets an IPv6 address from it:
clusterd chooses the first offset no other Service holds or requests (and
chooses again when LB-IPAM, which hands out the lowest free address too, gave
that one to another Service before it saw the request). And the
IPv4 addresses a Service holds (its ``status.loadBalancer.ingress``) are
requested too, else writing the IPv6 ones would take them away. MetalLB holds one address per family (two IPv6
addresses make it allocate nothing), so a MetalLB Service moves to its new
address alone and the lost old one is reported.

clusterd owns only the values it wrote (clusterd/core/service_annotations.py),
the IPv4 addresses it keeps requesting included: the user never asked to pin
them; removing ``dynamic-prefix.io/name`` takes back only clusterd's own values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from clusterd.core import companions
from clusterd.core.placements import Placements
from clusterd.core.pools import NAME, RANGE, prefixes_in_use
from clusterd.core.service_annotations import (
    CILIUM_IPS,
    CILIUM_IPS_OLD,
    DNS_TARGET,
    FORK_SUFFIX,
    HOST_SUFFIX,
    IP_ANNOTATION,
    MANAGE_DNS,
    METALLB_IPS,
    OWNED,
    SERVICE_RANGE,
    addresses,
    fork_records,
    ip_annotation,
    ips,
    manage_dns,
    merge,
    owned,
    split,
)
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from routerd.core import ranges

__all__ = [
    "CILIUM_IPS",
    "CILIUM_IPS_OLD",
    "DNS_TARGET",
    "HOST_SUFFIX",
    "IP_ANNOTATION",
    "MANAGE_DNS",
    "METALLB_IPS",
    "METALLB_ONE_PER_FAMILY",
    "NOT_SYNCED",
    "OWNED",
    "SERVICE_RANGE",
    "WAITING",
    "ServicePlan",
    "ServiceView",
    "addresses",
    "ip_annotation",
    "owned",
    "plan",
]

WAITING = "WaitingForAddress"
NOT_SYNCED = "NotSynced"
METALLB_ONE_PER_FAMILY = "MetalLBOneAddressPerFamily"


@dataclass(frozen=True)
class ServiceView:
    """What the planner needs of a Service."""

    namespace: str
    name: str
    type: str
    annotations: Mapping[str, str]
    ingress_ips: tuple[str, ...]
    """status.loadBalancer.ingress[].ip"""
    families: tuple[str, ...] = ()
    """spec.ipFamilies; empty when not known."""


@dataclass(frozen=True)
class ServicePlan:
    annotations: dict[str, str | None]
    """The annotation changes to write (None deletes); empty when nothing changes."""
    problem: str | None = None
    """What keeps the Service from being fully in step; an Event and ServicesSynced False say it.
    With no annotation changes the Service keeps what it has."""
    reason: str = NOT_SYNCED
    """The problem's kind, for the Event and the ServicesSynced reason."""
    chosen: tuple[IPv6Address, ...] = ()
    """Addresses clusterd picked for a Service that had none: no other Service may get them."""
    summary: str = ""
    companions: tuple[tuple[IPv6Network, IPv6Address], ...] = ()
    """(draining prefix, old address) a companion Service must hold: the Service let go of them."""
    recheck: bool = False
    """Its address is clusterd's pick, not given yet: plan it again with what other Services hold."""

    @property
    def waiting(self) -> bool:
        """Nothing to do until LB-IPAM gives the Service an IPv6 address (the watch brings it)."""
        return self.reason == WAITING


def _release(svc: ServiceView) -> ServicePlan:
    record = owned(svc.annotations)
    if not record and OWNED not in svc.annotations:
        return ServicePlan({})
    changes: dict[str, str | None] = {OWNED: None, **fork_records(svc.annotations)}
    for key, mine in record.items():
        merged = merge(svc.annotations.get(key), mine, [])
        if merged != svc.annotations.get(key):
            changes[key] = merged
    return ServicePlan(changes, summary="released: took back only clusterd's own values")


def _offset_from(
    addresses: Sequence[IPv6Address], placed: list[tuple[IPv6Network, ranges.PlacedRange]]
) -> int | None:
    """The host offset of the first address that lies in the range of one of the prefixes."""
    for addr in addresses:
        for _prefix, r in placed:
            if r.contains(addr):
                return r.offset_of(addr)
    return None


def _free_offset(
    placed: list[tuple[IPv6Network, ranges.PlacedRange]], taken: AbstractSet[IPv6Address]
) -> int | None:
    """The lowest offset free in every prefix: the same answer on every retry (at most len(taken) steps)."""
    first = placed[0][1]
    for offset in range(int(first.end) - int(first.start) + 1):
        if not any(r.at(offset) in taken for _p, r in placed):
            return offset
    return None


def _problem(text: str, reason: str = NOT_SYNCED) -> ServicePlan:
    return ServicePlan({}, problem=text, reason=reason)


def plan(
    svc: ServiceView,
    spec: DynamicPrefixSpec | None,
    status: DynamicPrefixStatus | None,
    default_annotation: str = "cilium",
    taken: AbstractSet[IPv6Address] = frozenset(),
    placements: Placements | None = None,
    default_mode: str = "auto",
) -> ServicePlan:
    """The annotation writes for one Service (pure); ``taken``: what other objects hold or request;
    ``placements``: the spec's ranges placed once for a whole pass."""
    ann = svc.annotations
    if NAME not in ann or spec is None or svc.type != "LoadBalancer":
        return _release(svc)
    if spec.transition.mode != "ha":
        return _release(svc)  # simple mode: only pools change (and nothing is left of an earlier ha mode)
    if status is None:
        return _problem("waiting for the DynamicPrefix to acquire a prefix", WAITING)
    range_name = ann.get(SERVICE_RANGE) or ann.get(RANGE)
    known = {r.name for r in spec.address_ranges}
    if not range_name:
        return _problem(f"set {SERVICE_RANGE} to one of: {', '.join(sorted(known)) or 'none'}")
    if range_name not in known:
        return _problem(f"address range {range_name!r} is not in the DynamicPrefix")
    if svc.families and "IPv6" not in svc.families:
        return _problem(f"spec.ipFamilies is {','.join(svc.families)}: no IPv6 family to manage "
                        "(set ipFamilyPolicy PreferDualStack or RequireDualStack)")  # fmt: skip
    prefixes = prefixes_in_use(status)
    if not prefixes:
        return _problem("waiting for the DynamicPrefix to acquire a prefix", WAITING)
    if status.prefix is None:
        return _problem("the DynamicPrefix has no current prefix (see its PrefixAcquired condition): "
                        "the Service keeps its addresses and DNS target")  # fmt: skip
    placed: list[tuple[IPv6Network, ranges.PlacedRange]] = []
    placements = placements or Placements(spec)
    for p in prefixes:
        pr = placements.ranges(p)
        if range_name in pr:
            placed.append((p, pr[range_name]))
    if not placed or placed[0][0] != status.prefix:
        # The DNS target must name the current prefix, never a draining one.
        return _problem(f"range {range_name!r} does not fit the current prefix {status.current_prefix} "
                        "(see the DynamicPrefix's Degraded condition): the Service keeps its addresses "
                        "and DNS target")  # fmt: skip

    suffix_text = ann.get(HOST_SUFFIX) or ann.get(FORK_SUFFIX)
    record = owned(ann)
    target_key = ip_annotation(ann, default_annotation)
    mine_before = record.get(target_key, [])
    listed = split(ann.get(target_key))
    users = [v for v in listed if v not in mine_before]
    chose = unconfirmed = False
    if suffix_text:
        try:
            suffix = IPv6Address(suffix_text)
        except ValueError:
            return _problem(f"{HOST_SUFFIX} {suffix_text!r} is not an IPv6 suffix like ::10")
        rspec = next(r for r in spec.address_ranges if r.name == range_name)
        if not IPv6Address(rspec.start) <= suffix <= IPv6Address(rspec.end):
            return _problem(
                f"{HOST_SUFFIX} {suffix} is outside range {range_name} ({rspec.start} - {rspec.end})"
            )
        mine = [ranges.place(p, suffix) for p, _r in placed]
    else:
        own = ips(mine_before, IPv6Address)
        # clusterd's own pick that LB-IPAM has not given yet: it may have given it to another
        # Service meanwhile (it hands out the lowest free address, as clusterd picks). Then the
        # pick can never come: choose again.
        unconfirmed = bool(own) and not ips([*svc.ingress_ips, *users], IPv6Address)
        if unconfirmed and not taken.isdisjoint(own):
            own = []
        held = [*ips(svc.ingress_ips, IPv6Address), *own, *ips(users, IPv6Address)]
        if held:
            offset = _offset_from(held, placed)
            if offset is None:
                return _problem(f"its address {held[0]} is outside range {range_name} in every "
                                "current or draining prefix; skipped")  # fmt: skip
        elif listed:
            # The annotation lists addresses but no IPv6 one: LB-IPAM allocates exactly what is
            # listed (Cilium and MetalLB alike), so no IPv6 address would ever come. Choose one.
            free = _free_offset(placed, taken)
            if free is None:
                return _problem(f"no free address in range {range_name} for it ({target_key} lists no IPv6 "
                                "address, so LB-IPAM will not pick one)")  # fmt: skip
            offset, chose = free, True
        else:
            return _problem("waiting for an address: LB-IPAM has not given it an IPv6 address yet", WAITING)
        mine = [r.at(offset) for _p, r in placed]

    # MetalLB holds one address per family and allocates nothing when asked for two.
    metallb = target_key == METALLB_IPS
    companion = companions.mode(ann, target_key, default_mode) == "companion"
    requested = mine[:1] if metallb or companion else mine
    # The IPv4 addresses the Service holds stay requested: LB-IPAM drops every allocation the
    # annotation does not list. clusterd wrote them, so they are its own values (taken back on release).
    kept = [str(a) for a in ips(svc.ingress_ips, IPv4Address) if str(a) not in users]
    values = [str(a) for a in requested] + kept
    problem, reason = None, NOT_SYNCED
    if metallb:
        extra = [str(a) for a in ips(users, IPv6Address) if str(a) not in values]
        if extra:
            return _problem(f"{METALLB_IPS} also lists {', '.join(extra)}, and MetalLB holds one address per "
                            "family (it would allocate nothing): remove it")  # fmt: skip
        if len(mine) > 1 and not companion:
            problem = (f"MetalLB holds one address per family: old connections on "
                       f"{', '.join(map(str, mine[1:]))} are not kept")  # fmt: skip
            reason = METALLB_ONE_PER_FAMILY

    want: dict[str, list[str]] = {target_key: values}
    if manage_dns(ann):
        want[DNS_TARGET] = [str(mine[0])]
    changes: dict[str, str | None] = {}
    for key in set(want) | set(record):
        merged = merge(ann.get(key), record.get(key, []), want.get(key, []))
        if merged != ann.get(key):
            changes[key] = merged
    new_record = json.dumps(want, separators=(",", ":"), sort_keys=True)
    if changes or ann.get(OWNED) != new_record:
        changes[OWNED] = new_record
        changes.update(fork_records(ann))
    summary = f"{target_key}={','.join(values)}" + (f"; DNS target {mine[0]}" if DNS_TARGET in want else "")
    if chose:
        summary += f" ({mine[0]}: the first offset in range {range_name} no other Service holds)"
    chosen = tuple(requested) if chose else ()
    # A companion takes an old address only once the Service let go of it (docs/metallb.md).
    held_now = set(ips(svc.ingress_ips, IPv6Address))
    handed = tuple((p, a) for (p, _r), a in zip(placed[1:], mine[1:], strict=True) if a not in held_now)
    return ServicePlan(changes, problem, reason, chosen, summary, handed if companion else (),
                       recheck=unconfirmed and not chose)  # fmt: skip
