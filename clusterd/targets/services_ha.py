"""HA mode's Service annotations: the addresses a LoadBalancer Service requests, and its DNS target.

The planner is :mod:`clusterd.core.services`. A consumer: Services move
between the pools' two steps, and each is planned on its own when it changes.
In companion mode it also creates and deletes the companion Services that keep
old addresses (:mod:`clusterd.core.companions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from clusterd.core import companions, services
from clusterd.core.pools import prefixes_in_use
from clusterd.core.service_annotations import FORK_RECORDS, ip_annotation
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from clusterd.targets.base import NAME, Context, Create, Delete, Edited, Patch, Plan, Rule, annotations_of


def view(obj: Mapping[str, Any]) -> services.ServiceView:
    m, spec = obj["metadata"], obj.get("spec") or {}
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return services.ServiceView(
        namespace=m["namespace"],
        name=m["name"],
        type=spec.get("type", ""),
        annotations=m.get("annotations") or {},
        ingress_ips=tuple(i["ip"] for i in ingress if i.get("ip")),
        families=tuple(spec.get("ipFamilies") or ()),
    )


@dataclass(frozen=True)
class ServicesTarget(Edited):
    kind: str = "Service"
    group: str = ""
    plural: str = "services"
    versions: tuple[str, ...] = ("v1",)
    crd: bool = False
    consumer: bool = True
    metric: str = "service"
    rules: tuple[Rule, ...] = (Rule("", "services", ("list", "watch", "patch", "create", "delete")),)

    def follows(self, obj: Mapping[str, Any]) -> str | None:
        return annotations_of(obj).get(NAME)

    def has_record(self, obj: Mapping[str, Any]) -> bool:
        return companions.is_companion(obj) or any(
            k in annotations_of(obj) for k in (services.OWNED, *FORK_RECORDS)
        )

    def reads(self, obj: Mapping[str, Any]) -> object:
        # Of the status only the addresses: LB-IPAM also writes conditions clusterd never reads.
        v, spec = view(obj), obj.get("spec") or {}
        return v.annotations, v.type, v.families, v.ingress_ips, spec.get("loadBalancerIP")

    def taken(self, obj: Mapping[str, Any]) -> set[IPv6Address]:
        """The IPv6 addresses it holds or requests: clusterd chooses none of them for another Service."""
        v = view(obj)
        return services.addresses(v.annotations, v.ingress_ips, (obj.get("spec") or {}).get("loadBalancerIP"))

    def desired(
        self,
        spec: DynamicPrefixSpec | None,
        status: DynamicPrefixStatus | None,
        obj: Mapping[str, Any],
        ctx: Context,
    ) -> Plan:
        if companions.is_companion(obj):
            return self._companion(spec, status, obj, ctx)
        v, m = view(obj), obj["metadata"]
        p = services.plan(v, spec, status, ctx.default_ip_annotation, placements=ctx.placements,
                          default_mode=ctx.default_ha_mode)  # fmt: skip
        if p.chosen or p.recheck:  # what others hold is gathered only when clusterd picks an address
            taken = ctx.taken((self.kind, m["namespace"], m["name"])) | ctx.chosen
            p = services.plan(v, spec, status, ctx.default_ip_annotation, taken, ctx.placements,
                              ctx.default_ha_mode)  # fmt: skip
        # A->B->A: A's companion goes first (MetalLB would take B from the Service meanwhile).
        current = status.prefix if status else None
        on_current = companions.name(m["name"], current) if current else None
        holder = ctx.get((self.kind, m["namespace"], on_current)) if on_current else None
        if p.annotations and holder is not None and companions.belongs(holder, obj):
            why = f"waiting for its companion {on_current} to let go of its address in {current}"
            return Plan(problem=why, reason=services.WAITING, waiting=True)
        key, made, problem = ip_annotation(v.annotations, ctx.default_ip_annotation), [], p.problem
        for prefix, address in p.companions:
            name = companions.name(m["name"], prefix)
            if (found := ctx.get((self.kind, m["namespace"], name))) is None:
                made.append(Create(companions.body(obj, prefix, address, key), source=obj))
            elif not companions.belongs(found, obj):
                problem = f"a Service named {name} is not its companion: rename it (old connections on {address} end)"
        return Plan(
            final=Patch(p.annotations) if p.annotations else None,
            problem=problem,
            reason=p.reason,
            waiting=p.waiting,
            chosen=p.chosen,
            summary=p.summary,
            also=tuple(made),
        )

    def _companion(
        self,
        spec: DynamicPrefixSpec | None,
        status: DynamicPrefixStatus | None,
        obj: Mapping[str, Any],
        ctx: Context,
    ) -> Plan:
        """A companion stays while its prefix drains and its original uses companions; else it goes."""
        if spec is None or status is None:
            return Plan()  # its DynamicPrefix is gone: clusterd keeps nothing; it goes with its original
        m = obj["metadata"]
        original = ctx.get((self.kind, m["namespace"], m["labels"][companions.COMPANION_OF]))
        draining = set(prefixes_in_use(status)) - {status.prefix}
        ann = annotations_of(original or obj)
        in_use = spec.transition.mode == "ha" and original is not None and companions.mode(
            ann, ip_annotation(ann, ctx.default_ip_annotation), ctx.default_ha_mode) == "companion"  # fmt: skip
        why = companions.expired(obj, draining, original, in_use)
        return Plan() if why is None else Plan(final=Delete(), summary=f"companion deleted: {why}")


TARGET = ServicesTarget()
