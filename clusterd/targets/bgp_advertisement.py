"""CiliumBGPAdvertisement (BGP control plane v2): one per subnet with ``bgp.advertise: true``. Pure.

clusterd creates and owns these objects (an ownerReference to the
DynamicPrefix, so deleting it deletes them). Each advertises the
LoadBalancer IPs of the Services that the subnet's pools serve: one
``advertisementType: Service`` entry per CiliumLoadBalancerIPPool carved from
the subnet (``dynamic-prefix.io/subnet``), with that pool's
``serviceSelector``, and the subnet's community. A renumbering changes no
advertisement: it selects Services by label, and the routes follow their
addresses. Labels let a user's ``CiliumBGPPeerConfig`` select them
(``families[].advertisements.matchLabels``). Served as ``cilium.io/v2`` since
Cilium 1.18 (``v2alpha1`` before).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clusterd import crd
from clusterd.core import pools
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus, Subnet
from clusterd.targets.base import NAME, Context, Create, Delete, Patch, Plan, Rule

SUBNET = pools.SUBNET
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "dynamic-prefix"
EVERY_SERVICE = {"matchExpressions": [{"key": "dynamic-prefix.io/no-such-label", "operator": "DoesNotExist"}]}
"""A pool without ``serviceSelector`` serves every Service, but an advertisement without a
selector selects none: this selector matches every Service."""
WELL_KNOWN = re.compile(r"^[a-z][a-z0-9-]*$")


def name(dp: str, subnet: str) -> str:
    return f"{dp}-{subnet}"


def communities(community: str) -> dict[str, list[str]]:
    """The Cilium field a community goes in: ``a:b:c`` large (RFC 8092), ``no-export`` well known,
    else standard (RFC 1997, ``a:b`` or a number); the CRD validates the value itself."""
    if community.count(":") == 2:
        return {"large": [community]}
    return {"wellKnown": [community]} if WELL_KNOWN.match(community) else {"standard": [community]}


def advertisements(dp: str, subnet: Subnet, ctx: Context) -> tuple[list[dict[str, Any]], str | None]:
    """The entries for one subnet, from the selectors of the pools carved from it (none: a problem)."""
    carved = sorted(
        (p for p in ctx.following(pools.LB_POOL.kind)
         if (p["metadata"].get("annotations") or {}).get(SUBNET) == subnet.name),
        key=lambda p: str(p["metadata"]["name"]),
    )  # fmt: skip
    if not carved:
        return [], (f"subnet {subnet.name!r} has bgp.advertise but no CiliumLoadBalancerIPPool takes it: "
                    f"annotate one with {NAME}: {dp} and {SUBNET}: {subnet.name}")  # fmt: skip
    out = []
    for pool in carved:
        entry: dict[str, Any] = {
            "advertisementType": "Service",
            "service": {"addresses": ["LoadBalancerIP"]},
            "selector": (pool.get("spec") or {}).get("serviceSelector") or EVERY_SERVICE,
        }
        if subnet.bgp is not None and subnet.bgp.community:
            entry["attributes"] = {"communities": communities(subnet.bgp.community)}
        if entry not in out:
            out.append(entry)
    return out, None


def _advertised(spec: DynamicPrefixSpec) -> dict[str, Subnet]:
    return {s.name: s for s in spec.subnets if s.bgp is not None and s.bgp.advertise}


@dataclass(frozen=True)
class BGPAdvertisementTarget:
    kind: str = "CiliumBGPAdvertisement"
    group: str = "cilium.io"
    plural: str = "ciliumbgpadvertisements"
    versions: tuple[str, ...] = ("v2", "v2alpha1")
    crd: bool = True
    consumer: bool = False
    whole: bool = True
    metric: str = "bgpadvertisement"
    rules: tuple[Rule, ...] = (
        Rule("cilium.io", "ciliumbgpadvertisements", ("list", "watch", "create", "patch", "delete")),
    )

    def follows(self, obj: Mapping[str, Any]) -> str | None:
        """Only the advertisements clusterd created (a user's own ones are never touched)."""
        labels = obj["metadata"].get("labels") or {}
        return labels.get(NAME) if labels.get(MANAGED_BY) == MANAGER and SUBNET in labels else None

    def has_record(self, obj: Mapping[str, Any]) -> bool:
        return self.follows(obj) is not None

    def taken(self, obj: Mapping[str, Any]) -> set[Any]:
        return set()

    def reads(self, obj: Mapping[str, Any]) -> object:
        return obj["metadata"].get("labels"), obj.get("spec")

    def creates(self, spec: DynamicPrefixSpec, status: DynamicPrefixStatus, ctx: Context) -> list[Create]:
        """One advertisement per advertised subnet (advertising nothing while no pool takes it)."""
        assert ctx.owner is not None
        m = ctx.owner["metadata"]
        dp, out = m["name"], []
        for subnet in _advertised(spec).values():
            entries, _problem = advertisements(dp, subnet, ctx)  # reported by desired() once it exists
            labels = {NAME: dp, SUBNET: subnet.name, MANAGED_BY: MANAGER}
            owner = {"apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND, "name": dp,
                     "uid": m["uid"], "controller": True}  # fmt: skip
            out.append(Create({
                "apiVersion": f"{self.group}/{self.versions[0]}", "kind": self.kind,
                "metadata": {"name": name(dp, subnet.name), "labels": labels, "annotations": {NAME: dp},
                             "ownerReferences": [owner]},
                "spec": {"advertisements": entries},
            }))  # fmt: skip
        return out

    def desired(
        self,
        spec: DynamicPrefixSpec | None,
        status: DynamicPrefixStatus | None,
        obj: Mapping[str, Any],
        ctx: Context,
    ) -> Plan:
        """Kept in step while its subnet is advertised; deleted once it is not (or is gone)."""
        m = obj["metadata"]
        dp, subnet = self.follows(obj), (m.get("labels") or {}).get(SUBNET)
        wanted = _advertised(spec).get(subnet or "") if spec is not None else None
        if dp is None or wanted is None or m["name"] != name(dp, wanted.name):
            return Plan(final=Delete(), summary="its subnet is no longer advertised")
        entries, problem = advertisements(dp, wanted, ctx)
        if (obj.get("spec") or {}).get("advertisements") == entries:
            return Plan(problem=problem)
        return Plan(final=Patch({}, "advertisements", entries), problem=problem)


TARGET = BGPAdvertisementTarget()
