"""The pool planner: what a CiliumLoadBalancerIPPool, CiliumCIDRGroup or MetalLB IPAddressPool should hold.

Pure. A pool opts in with annotations::

    dynamic-prefix.io/name: home-ipv6              # the DynamicPrefix
    dynamic-prefix.io/address-range: loadbalancers # or dynamic-prefix.io/subnet: <name>
                                                   # (neither: the whole prefix)

clusterd owns only the entries it wrote, recorded in the annotation
``dynamic-prefix.io/managed`` (a JSON list). Everything else in the list (IPv4
blocks, static entries, a block a user edited by hand) is the user's and is
never touched. Blocks exist for the current prefix and every draining one, so
Services keep their old addresses until the old prefix expires. A change is
written in two steps around the Services: ``grow`` adds entries before any
Service requests an address in them, ``shrink`` removes entries only after the
Services stopped requesting addresses in them. Shrinking first could make Cilium
move Services off addresses that still work, and a request for an address no
pool holds leaves Cilium's ``IPAMRequestSatisfied`` False (``no_pool``) for good.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network, ip_network
from typing import Any, Literal

from clusterd.core.placements import Placements
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus

NAME = "dynamic-prefix.io/name"
RANGE = "dynamic-prefix.io/address-range"
SUBNET = "dynamic-prefix.io/subnet"
MANAGED = "dynamic-prefix.io/managed"
FORK_RECORDS = ("dynamic-prefix.io/managed-blocks", "dynamic-prefix.io/managed-cidrs")
"""The Go operator fork's records (docs/migrating.md): ``cidr=X``/``range=A-B`` blocks, plain CIDRs."""

Entry = Any  # a block dict ({"cidr"} or {"start", "stop"}), a CIDR string or a "start-end" string


@dataclass(frozen=True)
class PoolKind:
    """One kind of object whose list clusterd keeps in step."""

    kind: str
    plural: str
    field: str
    style: Literal["blocks", "cidrs", "ranges"]
    """Cilium's block dicts, bare CIDRs (a range as the CIDRs covering it), or MetalLB's strings
    (a range as ``start-end``, anything else as a CIDR)."""


LB_POOL = PoolKind("CiliumLoadBalancerIPPool", "ciliumloadbalancerippools", "blocks", "blocks")
CIDR_GROUP = PoolKind("CiliumCIDRGroup", "ciliumcidrgroups", "externalCIDRs", "cidrs")
METALLB_POOL = PoolKind("IPAddressPool", "ipaddresspools", "addresses", "ranges")


@dataclass(frozen=True)
class Write:
    """One write to a pool: the full list and the ownership record (None removes it)."""

    entries: list[Entry]
    managed: list[Entry] | None


@dataclass(frozen=True)
class PoolPlan:
    grow: Write | None = None
    """Adds entries (or only updates the record): written before the Services."""
    shrink: Write | None = None
    """Removes entries: written after the Services no longer request addresses in them."""

    @property
    def writes(self) -> tuple[Write, ...]:
        return tuple(w for w in (self.grow, self.shrink) if w is not None)

    @property
    def final(self) -> Write | None:
        """The one write to the final list, for when no Service sits between the two steps."""
        return self.shrink or self.grow


def prefixes_in_use(status: DynamicPrefixStatus) -> list[IPv6Network]:
    """The current prefix first, then the draining ones: what pools must still hold."""
    out = []
    for h in status.history:
        if h.state in ("active", "draining"):
            out.append(IPv6Network(h.prefix))
    return out


def desired(
    kind: PoolKind,
    annotations: Mapping[str, str],
    spec: DynamicPrefixSpec,
    status: DynamicPrefixStatus,
    placements: Placements | None = None,
) -> tuple[list[Entry], str | None]:
    """The entries clusterd should own in this pool, or a problem (``placements``: the spec's, shared)."""
    placements = placements or Placements(spec)
    range_name, subnet_name = annotations.get(RANGE), annotations.get(SUBNET)
    if range_name and subnet_name:
        return [], f"set {RANGE} or {SUBNET}, not both"
    if range_name and range_name not in {r.name for r in spec.address_ranges}:
        return [], f"address range {range_name!r} is not in the DynamicPrefix (has: {_names(spec)})"
    if subnet_name and subnet_name not in {s.name for s in spec.subnets}:
        return [], f"subnet {subnet_name!r} is not in the DynamicPrefix"
    out: list[Entry] = []
    for prefix in prefixes_in_use(status):
        cidrs: list[IPv6Network] = []
        if range_name:
            r = placements.ranges(prefix).get(range_name)
            if r is None:
                continue  # does not fit this prefix; the DynamicPrefix's Degraded condition says why
            if kind.style == "blocks":
                out.append({"start": str(r.start), "stop": str(r.end)})
                continue
            if kind.style == "ranges":
                out.append(f"{r.start}-{r.end}")
                continue
            cidrs = list(r.cidrs)
        elif subnet_name:
            subnets = placements.subnets(prefix)
            if subnet_name not in subnets:
                continue
            cidrs = [subnets[subnet_name]]
        else:
            cidrs = [prefix]
        out += [{"cidr": str(c)} if kind.style == "blocks" else str(c) for c in cidrs]
    return _unique(out), None


def _names(spec: DynamicPrefixSpec) -> str:
    return ", ".join(r.name for r in spec.address_ranges) or "none"


def _unique(entries: list[Entry]) -> list[Entry]:
    out: list[Entry] = []
    for e in entries:
        if e not in out:
            out.append(e)
    return out


def _fork_entry(key: str) -> Entry:
    kind, _, value = key.strip().partition("=")
    if kind == "cidr":
        return {"cidr": value}
    if kind == "range":
        start, _, stop = value.partition("-")
        return {"start": start, "stop": stop} if stop else {"start": start}
    return key.strip()  # a CIDR group's plain CIDR


def owned(annotations: Mapping[str, str]) -> list[Entry]:
    """The ownership record; an unreadable one counts as empty (we then own nothing). Without one,
    the fork's record: what it wrote becomes clusterd's (else its leftovers stay the user's forever)."""
    if MANAGED not in annotations:
        return [_fork_entry(k) for f in FORK_RECORDS for k in annotations.get(f, "").split(",") if k.strip()]
    raw = annotations.get(MANAGED)
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def record_unchanged(annotations: Mapping[str, str], record: list[Entry] | None) -> bool:
    """Whether the ownership record already says ``record`` (None: released, no record), so the
    record alone needs no write; no record and nothing to own count as the same. A fork's
    record is always replaced."""
    if any(f in annotations for f in FORK_RECORDS):
        return False
    if record is None:
        return MANAGED not in annotations
    return owned(annotations) == record


def plan(current: list[Entry], annotations: Mapping[str, str], want: list[Entry] | None) -> PoolPlan:
    """The writes that take ``current`` to the user's entries plus ``want`` (None: release the pool)."""
    mine = owned(annotations)
    user = [e for e in current if e not in mine]
    target = [] if want is None else want
    final = user + [e for e in target if e not in user]
    final_managed: list[Entry] | None = None if want is None else [e for e in target if e not in user]
    if final == current and record_unchanged(annotations, final_managed):
        return PoolPlan()
    added = [e for e in final if e not in current]
    removed = [e for e in current if e not in final]
    if not removed:
        return PoolPlan(grow=Write(final, final_managed))
    grow = None
    if added:
        grow = Write(current + added, _unique(mine + [e for e in added if e not in user]))
    return PoolPlan(grow=grow, shrink=Write(final, final_managed))


def reserved(pool_spec: Mapping[str, Any]) -> set[IPv6Address]:
    """The IPv6 addresses Cilium gives no Service in a CiliumLoadBalancerIPPool.

    With ``allowFirstLastIPs: "No"`` Cilium holds back the first and last address of
    every ``cidr`` block of four addresses or more (not of ``start``/``stop`` blocks).
    """
    if pool_spec.get("allowFirstLastIPs") != "No":
        return set()
    out: set[IPv6Address] = set()
    for block in pool_spec.get("blocks") or []:
        try:
            net = ip_network(block.get("cidr") or "", strict=False)
        except ValueError:
            continue  # a start/stop block, or one Cilium refuses as well
        if isinstance(net, IPv6Network) and net.num_addresses > 2:
            out |= {net[0], net[-1]}
    return out


def managed_annotation(record: list[Entry] | None) -> str | None:
    return None if record is None else json.dumps(record, separators=(",", ":"), sort_keys=True)
