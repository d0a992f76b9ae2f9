"""Holders whose ``spec`` carries a list of address blocks or CIDRs (Cilium's pool and CIDR group, MetalLB's). Pure.

The list logic (which entries are clusterd's, grow before the Services,
shrink after) is :mod:`clusterd.core.pools`; this adapts it to the target
interface for one kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from clusterd.core import pools
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from clusterd.targets.base import NAME, Context, Edited, Patch, Plan, Rule, annotations_of


def _patch(field: str, w: pools.Write | None, ann: Mapping[str, str]) -> Patch | None:
    if w is None:
        return None
    forks: dict[str, str | None] = {f: None for f in pools.FORK_RECORDS if f in ann}  # replaced by ours
    return Patch({pools.MANAGED: pools.managed_annotation(w.managed), **forks}, field, w.entries)


@dataclass(frozen=True)
class ListTarget(Edited):
    """A kind (cluster-scoped or namespaced) whose ``spec.<field>`` list clusterd keeps in step (see core/pools.py)."""

    pool: pools.PoolKind
    group: str
    versions: tuple[str, ...]
    metric: str
    rules: tuple[Rule, ...]
    reserves: bool = False
    """Cilium holds back some addresses of the pool's blocks (``allowFirstLastIPs: "No"``)."""
    crd: bool = True
    consumer: bool = False

    @property
    def kind(self) -> str:
        return self.pool.kind

    @property
    def plural(self) -> str:
        return self.pool.plural

    def follows(self, obj: Mapping[str, Any]) -> str | None:
        return annotations_of(obj).get(NAME)

    def has_record(self, obj: Mapping[str, Any]) -> bool:
        return any(k in annotations_of(obj) for k in (pools.MANAGED, *pools.FORK_RECORDS))

    def reads(self, obj: Mapping[str, Any]) -> object:
        # Cilium writes the pool's status (conditions, counts) at every allocation: not read.
        return annotations_of(obj), obj.get("spec")

    def taken(self, obj: Mapping[str, Any]) -> set[IPv6Address]:
        """Addresses no Service may be given: those Cilium holds back in a pool."""
        return pools.reserved(obj.get("spec") or {}) if self.reserves else set()

    def entries(self, obj: Mapping[str, Any]) -> list[Any]:
        return list((obj.get("spec") or {}).get(self.pool.field) or [])

    def desired(
        self,
        spec: DynamicPrefixSpec | None,
        status: DynamicPrefixStatus | None,
        obj: Mapping[str, Any],
        ctx: Context,
    ) -> Plan:
        ann = annotations_of(obj)
        if spec is None or status is None:  # released: take back only our entries
            return Plan(final=_patch(self.pool.field, pools.plan(self.entries(obj), ann, None).final, ann))
        want, problem = pools.desired(self.pool, ann, spec, status, ctx.placements)
        if problem is not None:
            return Plan(problem=problem)
        p = pools.plan(self.entries(obj), ann, want)
        return Plan(grow=_patch(self.pool.field, p.grow, ann), final=_patch(self.pool.field, p.final, ann))
