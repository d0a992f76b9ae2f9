"""The Service planner for HA mode: old addresses stay, DNS moves to the new prefix. Pure.

A LoadBalancer Service opts in with ``dynamic-prefix.io/name`` (and
``dynamic-prefix.io/service-address-range``, else ``.../address-range``). Its
*host offset* inside the range is read from whichever prefix -- current or
draining -- its present IPv6 address belongs to (the Go operator computed it
against the current prefix while the Service still held an old address, and
got garbage). The Service then asks for that offset in the current prefix and
in every draining one; DNS (external-dns) gets the current address only.
``dynamic-prefix.io/host-suffix`` pins the host part instead (``::10`` in
every prefix).

clusterd owns only the values it wrote, recorded in
``dynamic-prefix.io/managed-annotations``; a user's IPv4 addresses and
anything else in those annotations is kept, and removing
``dynamic-prefix.io/name`` takes back only clusterd's own values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network, ip_address

from clusterd.core import ranges
from clusterd.core.pools import NAME, RANGE, prefixes_in_use
from clusterd.core.status import placed_ranges
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus

SERVICE_RANGE = "dynamic-prefix.io/service-address-range"
HOST_SUFFIX = "dynamic-prefix.io/host-suffix"
MANAGE_DNS = "dynamic-prefix.io/manage-dns"
IP_ANNOTATION = "dynamic-prefix.io/ip-annotation"
OWNED = "dynamic-prefix.io/managed-annotations"

CILIUM_IPS = "lbipam.cilium.io/ips"
CILIUM_IPS_OLD = "io.cilium/lb-ipam-ips"
METALLB_IPS = "metallb.io/loadBalancerIPs"
DNS_TARGET = "external-dns.alpha.kubernetes.io/target"


@dataclass(frozen=True)
class ServiceView:
    """What the planner needs of a Service."""

    namespace: str
    name: str
    type: str
    annotations: Mapping[str, str]
    ingress_ips: tuple[str, ...]
    """status.loadBalancer.ingress[].ip"""


@dataclass(frozen=True)
class ServicePlan:
    annotations: dict[str, str | None]
    """The annotation changes to write (None deletes); empty when nothing changes."""
    problem: str | None = None
    """Why the Service is skipped (it keeps what it has); surfaced as an Event and in ServicesSynced."""
    waiting: bool = False
    """It has no IPv6 address yet: nothing to do until Cilium gives it one (the watch brings it)."""
    summary: str = ""


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def owned(annotations: Mapping[str, str]) -> dict[str, list[str]]:
    """The ownership record; unreadable counts as owning nothing."""
    try:
        doc = json.loads(annotations.get(OWNED) or "{}")
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: [str(x) for x in v] for k, v in doc.items() if isinstance(v, list)}


def ip_annotation(annotations: Mapping[str, str], default: str) -> str:
    """Which annotation carries the requested addresses for this Service.

    ``dynamic-prefix.io/ip-annotation: cilium|metallb`` decides; else a Service
    already using one of the keys keeps it (the older Cilium key too); else a
    MetalLB pool annotation means MetalLB; else clusterd's configured default.
    """
    explicit = annotations.get(IP_ANNOTATION)
    if explicit == "metallb":
        return METALLB_IPS
    if explicit == "cilium":
        return CILIUM_IPS
    for key in (CILIUM_IPS, CILIUM_IPS_OLD, METALLB_IPS):
        if key in annotations:
            return key
    if any(k.startswith(("metallb.io/", "metallb.universe.tf/")) for k in annotations):
        return METALLB_IPS
    return METALLB_IPS if default == "metallb" else CILIUM_IPS


def _merge(current: str | None, mine_before: list[str], mine_now: list[str]) -> str | None:
    """Keep every value the user wrote; replace ours. None when nothing is left."""
    user = [v for v in _split(current) if v not in mine_before and v not in mine_now]
    values = mine_now + user
    return ",".join(values) if values else None


def _release(svc: ServiceView) -> ServicePlan:
    record = owned(svc.annotations)
    if not record and OWNED not in svc.annotations:
        return ServicePlan({})
    changes: dict[str, str | None] = {OWNED: None}
    for key, mine in record.items():
        merged = _merge(svc.annotations.get(key), mine, [])
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


def plan(
    svc: ServiceView,
    spec: DynamicPrefixSpec | None,
    status: DynamicPrefixStatus | None,
    default_annotation: str = "cilium",
) -> ServicePlan:
    """The annotation writes for one Service (pure)."""
    ann = svc.annotations
    if NAME not in ann or spec is None or svc.type != "LoadBalancer":
        return _release(svc)
    if spec.transition.mode != "ha":
        return _release(svc)  # simple mode: only pools change (and nothing is left of an earlier ha mode)
    if status is None:
        return ServicePlan({}, waiting=True)
    range_name = ann.get(SERVICE_RANGE) or ann.get(RANGE)
    known = {r.name for r in spec.address_ranges}
    if not range_name:
        return ServicePlan({}, problem=f"set {SERVICE_RANGE} to one of: {', '.join(sorted(known)) or 'none'}")
    if range_name not in known:
        return ServicePlan({}, problem=f"address range {range_name!r} is not in the DynamicPrefix")
    prefixes = prefixes_in_use(status)
    if not prefixes:
        return ServicePlan({}, waiting=True)
    placed: list[tuple[IPv6Network, ranges.PlacedRange]] = []
    for p in prefixes:
        pr, _errors = placed_ranges(spec, p)
        if range_name in pr:
            placed.append((p, pr[range_name]))
    if not placed:
        return ServicePlan(
            {}, problem=f"range {range_name!r} does not fit the prefix (see the DynamicPrefix)"
        )

    suffix_text = ann.get(HOST_SUFFIX)
    record = owned(ann)
    target_key = ip_annotation(ann, default_annotation)
    if suffix_text:
        try:
            suffix = IPv6Address(suffix_text)
        except ValueError:
            return ServicePlan({}, problem=f"{HOST_SUFFIX} {suffix_text!r} is not an IPv6 suffix like ::10")
        rspec = next(r for r in spec.address_ranges if r.name == range_name)
        if not IPv6Address(rspec.start) <= suffix <= IPv6Address(rspec.end):
            return ServicePlan({}, problem=f"{HOST_SUFFIX} {suffix} is outside range {range_name} "
                                           f"({rspec.start} - {rspec.end})")  # fmt: skip
        mine = [str(ranges.place(p, suffix)) for p, _r in placed]
    else:
        held: list[IPv6Address] = []
        for text in [*svc.ingress_ips, *record.get(target_key, [])]:
            try:
                a = ip_address(text)
            except ValueError:
                continue
            if isinstance(a, IPv6Address) and a not in held:
                held.append(a)
        if not held:
            return ServicePlan({}, waiting=True)
        offset = _offset_from(held, placed)
        if offset is None:
            return ServicePlan({}, problem=f"its address {held[0]} is outside range {range_name} in every "
                                           "current or draining prefix; skipped")  # fmt: skip
        mine = [str(r.at(offset)) for _p, r in placed]

    want: dict[str, list[str]] = {target_key: mine}
    if ann.get(MANAGE_DNS, "true").lower() != "false":
        want[DNS_TARGET] = mine[:1]
    changes: dict[str, str | None] = {}
    for key in set(want) | set(record):
        merged = _merge(ann.get(key), record.get(key, []), want.get(key, []))
        if merged != ann.get(key):
            changes[key] = merged
    new_record = json.dumps(want, separators=(",", ":"), sort_keys=True)
    if changes or ann.get(OWNED) != new_record:
        changes[OWNED] = new_record
    summary = f"{target_key}={','.join(mine)}" + (f"; DNS target {mine[0]}" if DNS_TARGET in want else "")
    return ServicePlan(changes, summary=summary)
