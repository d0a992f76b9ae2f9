"""Calico ``IPPool``: one pool per prefix, made from a user's *parent* pool; never a ``cidr`` edit. Pure.

Calico refuses to change a pool's ``cidr`` or ``blockSize`` ("IPPool CIDR
cannot be modified"); its own way to renumber is: create a pool for the new
range, set ``disabled: true`` on the old one (no new addresses from it, the
ones given stay), delete it once nothing needs it. So a pool annotated
``dynamic-prefix.io/name`` (and optionally ``address-range`` or ``subnet``, as
a Cilium pool) is a *template*: clusterd keeps one *derived* pool per CIDR the
selection gives in the current prefix, named ``<parent>-<hash of the CIDR>``,
labelled with the DynamicPrefix and the parent, its spec the parent's
(``allowedUses``, ``blockSize``, ``natOutgoing``, ``nodeSelector``,
encapsulation, ...) with that ``cidr``. A derived pool is enabled while its
prefix is current and the parent still selects its CIDR, disabled while its
prefix drains (or the parent no longer wants it), deleted when its prefix
leaves the DynamicPrefix's status. The parent itself is never written.

Written as ``projectcalico.org/v3`` when Calico's API server serves it (its
APIService is Available: the API Calico's docs ask users to write), else as
``crd.projectcalico.org/v1`` (the CRD Calico stores pools in); the DynamicPrefix's
``status.targets`` says which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from clusterd.core import pools
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from clusterd.targets.base import NAME, Context, Create, Delete, Patch, Plan, Rule, annotations_of

KIND = "IPPool"
GROUP = "crd.projectcalico.org"
API_GROUP = "projectcalico.org"
"""The group Calico's API server serves (v3); the same pools, validated and defaulted by Calico."""
PARENT = "dynamic-prefix.io/parent"
"""Label on a derived pool: the parent pool it was made from."""
PREFIX = "dynamic-prefix.io/prefix"
"""Annotation on a derived pool: the prefix its CIDR lies in (its lifetime is the pool's)."""
NOT_COPIED = ("cidr", "disabled")
_SELECTION = pools.PoolKind(KIND, "ippools", "cidr", "cidrs")
"""The Cilium pools' selection (range, subnet or the whole prefix), as CIDRs: a pool holds one."""


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def derived_name(parent: str, cidr: str) -> str:
    return f"{parent}-{hashlib.sha256(cidr.encode()).hexdigest()[:8]}"


def current_cidrs(
    parent: Mapping[str, Any], spec: DynamicPrefixSpec, status: DynamicPrefixStatus, ctx: Context
) -> tuple[list[str], str | None]:
    """The CIDRs the parent's selection gives in the current prefix (none while there is none)."""
    current = status.model_copy(update={"history": [h for h in status.history if h.state == "active"]})
    cidrs, problem = pools.desired(_SELECTION, annotations_of(parent), spec, current, ctx.placements)
    return [str(c) for c in cidrs], problem


@dataclass(frozen=True)
class CalicoPoolTarget:
    kind: str = KIND
    group: str = GROUP
    plural: str = "ippools"
    versions: tuple[str, ...] = ("v3", "v1")
    aggregated: tuple[tuple[str, str], ...] = (("v3", API_GROUP),)
    crd: bool = True
    consumer: bool = False
    whole: bool = False
    """Users create the parents; clusterd creates (``creates``) and deletes the derived pools."""
    metric: str = "pool"
    rules: tuple[Rule, ...] = (
        Rule(GROUP, "ippools", ("list", "watch", "create", "patch", "delete")),
        Rule(API_GROUP, "ippools", ("list", "watch", "create", "patch", "delete")),
    )

    def follows(self, obj: Mapping[str, Any]) -> str | None:
        """A parent by its annotation; a derived pool by its label."""
        return annotations_of(obj).get(NAME) or (labels_of(obj).get(NAME) if self.has_record(obj) else None)

    def has_record(self, obj: Mapping[str, Any]) -> bool:
        return PARENT in labels_of(obj)

    def taken(self, obj: Mapping[str, Any]) -> set[IPv6Address]:
        return set()

    def reads(self, obj: Mapping[str, Any]) -> object:
        return annotations_of(obj), labels_of(obj), obj.get("spec")

    def desired(
        self,
        spec: DynamicPrefixSpec | None,
        status: DynamicPrefixStatus | None,
        obj: Mapping[str, Any],
        ctx: Context,
    ) -> Plan:
        if self.has_record(obj):
            return self._derived(spec, status, obj, ctx)
        if spec is None or status is None:
            return Plan()  # a parent is never written; its derived pools follow their prefixes
        return Plan(problem=current_cidrs(obj, spec, status, ctx)[1])  # its pools come from creates()

    def creates(self, spec: DynamicPrefixSpec, status: DynamicPrefixStatus, ctx: Context) -> list[Create]:
        """One derived pool per CIDR each parent's selection gives in the current prefix (made from it)."""
        out = []
        for parent in ctx.following(self.kind):
            if self.has_record(parent):
                continue  # a derived pool, not a parent
            name, dp = parent["metadata"]["name"], annotations_of(parent)[NAME]
            template = {k: v for k, v in (parent.get("spec") or {}).items() if k not in NOT_COPIED}
            for cidr in current_cidrs(parent, spec, status, ctx)[0]:  # a problem: desired() reports it
                meta = {"name": derived_name(name, cidr), "labels": {NAME: dp, PARENT: name},
                        "annotations": {PREFIX: _prefix_of(cidr, status)}}  # fmt: skip
                body = {"apiVersion": f"{GROUP}/v1", "kind": self.kind, "metadata": meta,  # as served: writes.py
                        "spec": {**template, "cidr": cidr, "disabled": False}}  # fmt: skip
                out.append(Create(body, source=parent))
        return out

    def _derived(
        self,
        spec: DynamicPrefixSpec | None,
        status: DynamicPrefixStatus | None,
        obj: Mapping[str, Any],
        ctx: Context,
    ) -> Plan:
        name, pool, labels = obj["metadata"]["name"], obj.get("spec") or {}, labels_of(obj)
        prefix = annotations_of(obj).get(PREFIX, "")
        if spec is None or status is None:
            return Plan()  # the DynamicPrefix is gone: left as it is (Sync says so)
        state = next((h.state for h in status.history if _same(h.prefix, prefix)), None)
        if state not in ("active", "draining"):  # expired, withdrawn or pruned: nothing may use it now
            return Plan(final=Delete(), summary=f"deleted {name}: prefix {prefix} is no longer valid")
        parent = next((p for p in ctx.following(self.kind)  # a parent that left the DynamicPrefix: none
                       if p["metadata"]["name"] == labels[PARENT] and not self.has_record(p)), None)  # fmt: skip
        wanted = (
            state == "active"
            and parent is not None
            and pool.get("cidr") in current_cidrs(parent, spec, status, ctx)[0]
        )
        if bool(pool.get("disabled")) != wanted:
            return Plan()
        if wanted:  # enabled again (the prefix came back): in the first step, before any consumer moves
            enable = Patch({}, spec={"disabled": False})
            return Plan(grow=enable, final=enable, summary=f"enabled {name}: {prefix} is current again")
        why = "is draining" if state == "draining" else "is current but no longer selected by the parent"
        return Plan(final=Patch({}, spec={"disabled": True}), summary=f"disabled {name}: {prefix} {why}")


def _same(a: str, b: str) -> bool:
    try:
        return IPv6Network(a) == IPv6Network(b)
    except ValueError:
        return False


def _prefix_of(cidr: str, status: DynamicPrefixStatus) -> str:
    net = IPv6Network(cidr)
    return next(h.prefix for h in status.history if h.state == "active"
                and net.subnet_of(IPv6Network(h.prefix)))  # fmt: skip


TARGET = CalicoPoolTarget()
