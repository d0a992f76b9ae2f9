"""Companion Services: HA where the IPAM gives a Service one address per family. Pure.

MetalLB holds one IPv6 address per Service, so a Service cannot keep its old
address next to its new one. In ``companion`` mode the Service moves to its
new address alone (and its DNS target with it) and a *companion* Service per
draining prefix keeps serving the old address: same selector, ports and
traffic policies, pinned to the old address, owned by the original (deleting
the original deletes it) and deleted when the old prefix's valid lifetime ends.

The order is what the IPAMs allow (docs/metallb.md, "HA mode on MetalLB"): two
Services on the same ports never hold one address at once on MetalLB, and a
Service refused an address is not tried again when it frees. So a companion
is created only once the original no longer holds the old address; created
earlier it would be refused and wait for MetalLB's next full reprocess.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from clusterd.core.pools import NAME
from clusterd.core.service_annotations import METALLB_IPS

HA_MODE = "dynamic-prefix.io/ha-mode"
"""On a Service: ``companion`` or ``addresses`` (several addresses on one Service)."""
COMPANION_OF = "dynamic-prefix.io/companion-of"
"""Label on a companion: the name of the Service it keeps the old address for."""
COMPANION_PREFIX = "dynamic-prefix.io/companion-prefix"
"""Annotation on a companion: the draining prefix whose address it holds."""
MANAGED_BY = "app.kubernetes.io/managed-by"
CLUSTERD = "dynamic-prefix-clusterd"

NOT_COPIED = frozenset({
    MANAGED_BY, "app.kubernetes.io/instance", "argocd.argoproj.io/instance", "helm.sh/chart",
    "kapp.k14s.io/app", "kapp.k14s.io/association", "kustomize.toolkit.fluxcd.io/name",
    "kustomize.toolkit.fluxcd.io/namespace", "helm.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/namespace",
})  # fmt: skip
"""Labels a companion does not take from its original: they would make Helm, Argo CD, kapp or Flux
count it as theirs (and prune it). The others stay, so the pools that select the original select it."""
ANNOTATIONS_COPIED = (
    "metallb.io/address-pool",
    "metallb.io/allow-shared-ip",
    "lbipam.cilium.io/sharing-key",
    "lbipam.cilium.io/sharing-cross-namespace",
)
"""The pool and the sharing key: two Services sharing an address (TCP and UDP on one address) have
companions that share it too."""

SPEC_COPIED = (
    "selector",
    "externalTrafficPolicy",
    "internalTrafficPolicy",
    "sessionAffinity",
    "sessionAffinityConfig",
    "loadBalancerClass",
    "loadBalancerSourceRanges",
    "allocateLoadBalancerNodePorts",
    "publishNotReadyAddresses",
)
PORT_FIELDS = ("name", "protocol", "port", "targetPort", "appProtocol")
"""A port's fields without its nodePort: the original holds that one."""


def mode(annotations: Mapping[str, str], ip_key: str, default: str) -> str:
    """``companion`` or ``addresses`` for a Service: its annotation, else the configured default,
    where ``auto`` means companions on MetalLB (one address per family) and addresses elsewhere."""
    chosen = annotations.get(HA_MODE) or default
    if chosen == "auto":
        return "companion" if ip_key == METALLB_IPS else "addresses"
    return chosen


def name(original: str, prefix: IPv6Network) -> str:
    """``<original>-dp-<8 hex of the original's name and the prefix>``, within the 63 characters a
    Service name may have (two long names that share their first 51 still differ)."""
    digest = hashlib.sha256(f"{original}/{prefix}".encode()).hexdigest()[:8]
    return f"{original[: 63 - 12].rstrip('-')}-dp-{digest}"


def is_companion(obj: Mapping[str, Any]) -> bool:
    """clusterd's own companion: its labels *and* a controlling owner that is a Service (a label
    alone, say on a copy of a companion's YAML, does not make a Service clusterd's to delete)."""
    m = obj["metadata"]
    labels = m.get("labels") or {}
    owned = any(r.get("kind") == "Service" and r.get("controller") for r in m.get("ownerReferences") or [])
    return COMPANION_OF in labels and labels.get(MANAGED_BY) == CLUSTERD and owned


def belongs(companion: Mapping[str, Any], original: Mapping[str, Any]) -> bool:
    """Whether an object by a companion's name is this Service's companion."""
    m, uid = companion["metadata"], original["metadata"].get("uid")
    return is_companion(companion) and any(r.get("uid") == uid for r in m.get("ownerReferences") or [])


def body(
    original: Mapping[str, Any], prefix: IPv6Network, address: IPv6Address, ip_key: str
) -> dict[str, Any]:
    """The companion of ``original`` holding ``address`` in the draining ``prefix``."""
    m, spec = original["metadata"], original.get("spec") or {}
    ann = m.get("annotations") or {}
    labels = {k: v for k, v in (m.get("labels") or {}).items() if k not in NOT_COPIED}
    annotations = {NAME: ann[NAME], COMPANION_PREFIX: str(prefix), ip_key: str(address)}
    annotations.update({k: v for k, v in ann.items() if k in ANNOTATIONS_COPIED})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name(m["name"], prefix),
            "namespace": m["namespace"],
            "labels": {**labels, MANAGED_BY: CLUSTERD, COMPANION_OF: m["name"]},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": m["name"],
                    "uid": m["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "type": "LoadBalancer",
            "ipFamilies": ["IPv6"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{k: p[k] for k in PORT_FIELDS if k in p} for p in spec.get("ports") or []],
            **{k: spec[k] for k in SPEC_COPIED if k in spec},
        },
    }


def expired(
    companion: Mapping[str, Any], draining: set[IPv6Network], original: Mapping[str, Any] | None, in_use: bool
) -> str | None:
    """Why a companion goes (None: it stays): its prefix is no longer draining (expired, or current
    again, when the original takes its address back), or its original is gone, replaced or no
    longer uses companions (``in_use``)."""
    ann = companion["metadata"].get("annotations") or {}
    try:
        prefix = IPv6Network(ann.get(COMPANION_PREFIX, ""))
    except ValueError:
        return f"its {COMPANION_PREFIX} annotation is not a prefix"
    if prefix not in draining:
        return f"{prefix} is no longer draining"
    if original is None:
        return "the Service it kept an address for is gone"
    uid = original["metadata"].get("uid")
    if not any(r.get("uid") == uid for r in companion["metadata"].get("ownerReferences") or []):
        return "the Service it kept an address for was replaced"
    if not in_use:
        return f"the Service it kept an address for no longer uses companions ({HA_MODE})"
    return None
