"""Companion Services, planned without an API server: names, whose a companion is, what it copies.

The hand-over itself is tested on the real MetalLB controller and cilium-operator
(tests/clusterd/test_metallb.py, test_transitions.py).
"""

from __future__ import annotations

from ipaddress import IPv6Network
from typing import Any

from clusterd.core import companions
from clusterd.core.placements import Placements
from clusterd.targets.base import Context, Create, Delete
from clusterd.targets.services_ha import TARGET
from tests.clusterd.test_services_planner import SPEC, A, B, status

MOVED = status((B, "active"), (A, "draining"))


def service(name: str = "web", **extra: Any) -> dict[str, Any]:
    ann = {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/service-address-range": "lb",
           "metallb.io/loadBalancerIPs": "2001:db8:b:0:f000::2a",
           "metallb.io/allow-shared-ip": "dns", "external-dns.alpha.kubernetes.io/hostname": "web.example"}  # fmt: skip
    return {
        "metadata": {"namespace": "apps", "name": name, "uid": f"uid-{name}", "annotations": ann,
                     "labels": {"app": "web", "app.kubernetes.io/instance": "argo-app", "kapp.k14s.io/app": "1"},
                     "resourceVersion": "1", **extra},
        "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "selector": {"app": "web"},
                 "ports": [{"port": 53, "protocol": "UDP", "nodePort": 31000}], "externalTrafficPolicy": "Local",
                 "healthCheckNodePort": 32000, "clusterIP": "fd00::1"},
        "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8:b:0:f000::2a"}]}},
    }  # fmt: skip


def plan(obj: dict[str, Any], cached: dict[str, dict[str, Any]]) -> Any:
    ctx = Context(Placements(SPEC), get=lambda oid: cached.get(oid[2]))
    return TARGET.desired(SPEC, MOVED, obj, ctx)


def test_two_long_names_alike_in_their_first_51_characters_get_two_companions() -> None:
    a, b = "x" * 51 + "-alpha", "x" * 51 + "-beta"
    assert companions.name(a, IPv6Network(A)) != companions.name(b, IPv6Network(A))
    assert all(len(companions.name(n, IPv6Network(A))) <= 63 for n in (a, b))


def test_the_companion_made_once_the_service_moved_copies_what_serving_needs_and_no_more() -> None:
    p = plan(service(), {})
    (made,) = p.also
    assert isinstance(made, Create)
    body = made.body
    assert body["metadata"]["annotations"] == {
        "dynamic-prefix.io/name": "home", "dynamic-prefix.io/companion-prefix": A,
        "metallb.io/loadBalancerIPs": "2001:db8:a:0:f000::2a", "metallb.io/allow-shared-ip": "dns"}  # fmt: skip
    assert body["metadata"]["labels"] == {"app": "web", "app.kubernetes.io/managed-by": "dynamic-prefix-clusterd",
                                          "dynamic-prefix.io/companion-of": "web"}  # fmt: skip
    assert body["spec"]["ports"] == [{"port": 53, "protocol": "UDP"}]
    assert "healthCheckNodePort" not in body["spec"] and "clusterIP" not in body["spec"]
    assert (
        body["spec"]["externalTrafficPolicy"] == "Local" and body["spec"]["ipFamilyPolicy"] == "SingleStack"
    )
    assert companions.is_companion(body) and companions.belongs(body, service())


def test_a_service_by_the_companions_name_that_is_not_it_is_reported_not_taken() -> None:
    name = companions.name("web", IPv6Network(A))
    stranger = service(name)  # follows the DynamicPrefix too, but nobody's companion
    stranger["metadata"]["labels"]["dynamic-prefix.io/companion-of"] = "web"  # a copied label alone
    assert not companions.is_companion(stranger)
    p = plan(service(), {name: stranger})
    assert p.also == () and p.problem is not None and f"{name} is not its companion" in p.problem
    # ...and planned on its own it is an ordinary Service, never deleted as a companion.
    assert not isinstance(TARGET.desired(SPEC, MOVED, stranger, Context(Placements(SPEC))).final, Delete)
