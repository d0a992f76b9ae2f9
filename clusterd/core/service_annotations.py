"""The Service annotations clusterd reads and writes in HA mode, and how it owns its values. Pure.

clusterd owns only the values it wrote, recorded as JSON in
``dynamic-prefix.io/managed-annotations``; a user's own values in the same
annotations are kept when clusterd rewrites or takes back its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TypeVar

SERVICE_RANGE = "dynamic-prefix.io/service-address-range"
HOST_SUFFIX = "dynamic-prefix.io/host-suffix"
MANAGE_DNS = "dynamic-prefix.io/manage-dns"
IP_ANNOTATION = "dynamic-prefix.io/ip-annotation"
OWNED = "dynamic-prefix.io/managed-annotations"

CILIUM_IPS = "lbipam.cilium.io/ips"
CILIUM_IPS_OLD = "io.cilium/lb-ipam-ips"
METALLB_IPS = "metallb.io/loadBalancerIPs"
DNS_TARGET = "external-dns.alpha.kubernetes.io/target"

Addr = TypeVar("Addr", IPv4Address, IPv6Address)


def split(value: str | None) -> list[str]:
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


def merge(current: str | None, mine_before: list[str], mine_now: list[str]) -> str | None:
    """Keep every value the user wrote; replace ours. None when nothing is left."""
    user = [v for v in split(current) if v not in mine_before and v not in mine_now]
    values = mine_now + user
    return ",".join(values) if values else None


def ips(texts: Iterable[str], family: type[Addr]) -> list[Addr]:
    """The addresses of one family among ``texts``, in order, once each; other text is skipped."""
    out: list[Addr] = []
    for text in texts:
        try:
            a = ip_address(text)
        except ValueError:
            continue
        if isinstance(a, family) and a not in out:
            out.append(a)
    return out


def addresses(
    annotations: Mapping[str, str], ingress_ips: Sequence[str], load_balancer_ip: str | None
) -> set[IPv6Address]:
    """The IPv6 addresses a Service holds or requests: clusterd never chooses them for another Service."""
    texts = [*ingress_ips, load_balancer_ip or ""]
    for key in (CILIUM_IPS, CILIUM_IPS_OLD, METALLB_IPS):
        texts += split(annotations.get(key))
    return set(ips(texts, IPv6Address))
