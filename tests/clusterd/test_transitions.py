"""Renumbering on the real load-balancer IPAM: what users' Services live through, step by step.

clusterd keeps pools and requested addresses in step with the prefix; the real
Cilium LB-IPAM (cilium-operator) or MetalLB controller allocates, and writes
every ``status.loadBalancer.ingress`` here. A watch records every address set
each Service went through, so "kept its address" is checked over the whole
transition, not only at its end: a re-allocation in between fails the test.

Steps: prefix A; B arrives (A deprecated, still valid); A expires.
"""

from __future__ import annotations

import os
import signal
import time
from ipaddress import IPv6Network
from typing import Any

import pytest
from kubernetes import client as k8s

from clusterd.core import companions
from tests.clusterd.conftest import NS
from tests.clusterd.test_clusterd import (
    V4,
    block,
)
from tests.clusterd.test_ha_services import (
    IPS,
    SIMPLE,
    annotations,
    at,
    in_range,
    on_prefix_a,
    one_address,
    prefix_a_with_web,
    send,
    service,
    wait_pool,
)
from tests.ground.apiserver import KubeAPI
from tests.ground.lbipam import IngressLog
from tests.ground.messages import prefix
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.apiserver

A, B = "2001:db8:a::/64", "2001:db8:b::/64"
USER_V4 = "192.0.2.10"
SATISFIED = "cilium.io/IPAMRequestSatisfied"


def cilium_condition(kube: KubeAPI, name: str) -> tuple[str, str] | None:
    """LB-IPAM's ``cilium.io/IPAMRequestSatisfied`` on a Service: (status, reason)."""
    svc = k8s.CoreV1Api(kube.admin()).read_namespaced_service(name, NS)
    c = next((c for c in svc.status.conditions or [] if c.type == SATISFIED), None)
    return (c.status, c.reason) if c else None


def all_satisfied(kube: KubeAPI, *names: str) -> None:
    def ok() -> bool:
        return all(cilium_condition(kube, n) == ("True", "satisfied") for n in names)

    try:
        wait_until(ok, 15, f"{SATISFIED}=True on {names}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; they have {[cilium_condition(kube, n) for n in names]}") from None


def test_the_pool_gains_b_the_service_keeps_a_and_gains_b_at_the_same_offset(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    cd, a = prefix_a_with_web(cluster, ingress, ha)
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_pool(cluster, V4, block(B), block(A))
    ingress.wait("web", lambda ips: set(ips) == {a, at(B, a)}, "its A address and B at the same offset")
    assert ingress.held_throughout("web", a), f"LB-IPAM re-allocated web: {ingress.history('web')}"
    all_satisfied(cluster, "web")


def test_the_old_prefix_expires_only_old_addresses_go_nothing_on_b_moves(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    cd, a = prefix_a_with_web(cluster, ingress, ha)
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    ingress.wait("web", lambda ips: set(ips) == {a, at(B, a)}, "both addresses")
    # A Service that is none of clusterd's business, on a B address its user asked for.
    bystander = at(B, "::f000:0:0:99")
    service(cluster, "bystander", {IPS: bystander}, managed=False)
    ingress.wait("bystander", lambda ips: ips == (bystander,), "its B address")
    # And one that asks for nothing: LB-IPAM picks from A or B (cilium/cilium#41458: on a
    # shrink, a Service that lost its address took one another Service still held).
    service(cluster, "roamer", managed=False)
    (roamer,) = ingress.wait("roamer", one_address, "an address")

    send(cd, 3, prefix(B), prefix(A, "withdrawn", valid=0))  # A's valid lifetime is over
    wait_pool(cluster, V4, block(B))
    ingress.wait("web", lambda ips: ips == (at(B, a),), "only its B address")
    (moved,) = ingress.wait("roamer", lambda ips: len(ips) == 1 and in_range(B, ips[0]), "a B address")
    assert annotations(cluster, "web").get(IPS) == at(B, a)
    assert ingress.held_throughout("web", at(B, a)), f"web's B address moved: {ingress.history('web')}"
    assert ingress.history("bystander") == [(bystander,)], "a Service on B changed address"
    assert in_range(A, roamer) or ingress.history("roamer") == [(roamer,)], "a Service on B changed address"
    assert len({at(B, a), bystander, moved}) == 3, "two Services hold one address"
    # Requests changed before the pool shrank: LB-IPAM never saw a request no pool holds.
    all_satisfied(cluster, "web", "bystander", "roamer")


def test_a_users_ipv4_block_and_addresses_survive_every_step(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    cd = on_prefix_a(cluster, ha)
    # The user asked for an IPv4 address; LB-IPAM allocates exactly what is listed.
    service(cluster, "pinned-v4", {IPS: USER_V4}, families=("IPv4", "IPv6"))
    # No request at all: LB-IPAM picks both families from the pool.
    service(cluster, "prefer", families=("IPv4", "IPv6"), policy="PreferDualStack")
    pinned = ingress.wait("pinned-v4", lambda ips: len(ips) == 2, "its IPv4 and an IPv6 address")
    prefer = ingress.wait("prefer", lambda ips: len(ips) == 2, "an IPv4 and an IPv6 address")
    (a1,) = [ip for ip in pinned if ":" in ip]
    (a2,) = [ip for ip in prefer if ":" in ip]
    (v4,) = [ip for ip in prefer if ":" not in ip]
    assert USER_V4 in pinned and in_range(A, a1) and in_range(A, a2), (pinned, prefer)

    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_pool(cluster, V4, block(B), block(A))
    ingress.wait("pinned-v4", lambda ips: set(ips) == {USER_V4, a1, at(B, a1)}, "three addresses")
    ingress.wait("prefer", lambda ips: set(ips) == {v4, a2, at(B, a2)}, "three addresses")

    send(cd, 3, prefix(B), prefix(A, "withdrawn", valid=0))
    wait_pool(cluster, V4, block(B))
    ingress.wait("pinned-v4", lambda ips: set(ips) == {USER_V4, at(B, a1)}, "the IPv4 and the B address")
    ingress.wait("prefer", lambda ips: set(ips) == {v4, at(B, a2)}, "the IPv4 and the B address")
    assert USER_V4 in annotations(cluster, "pinned-v4")[IPS].split(",")
    for name, kept in (("pinned-v4", USER_V4), ("prefer", v4)):
        assert ingress.held_throughout(name, kept), f"{name} lost {kept}: {ingress.history(name)}"
    all_satisfied(cluster, "pinned-v4", "prefer")


def test_simple_mode_a_service_on_a_gets_a_b_address_once_a_is_gone(
    cluster: KubeAPI, ingress: IngressLog, ha: Any, record_property: Any
) -> None:
    """What users of simple mode see: their Service's address changes when the old prefix expires."""
    cd = on_prefix_a(cluster, ha, SIMPLE)
    service(cluster, "plain", managed=False)
    (a,) = ingress.wait("plain", one_address, "an A address")
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_pool(cluster, V4, block(B), block(A))
    assert ingress.current("plain") == (a,), "a simple-mode Service moved while A was still valid"

    sent = time.monotonic()
    send(cd, 3, prefix(B), prefix(A, "withdrawn", valid=0))
    (b,) = ingress.wait("plain", lambda ips: len(ips) == 1 and in_range(B, ips[0]), "a B address")
    took = ingress.first_seen("plain", b) - sent
    record_property("simple_mode_readdress_seconds", round(took, 3))
    print(f"simple mode: the Service moved from {a} to {b} {took:.3f} s after A expired")
    assert ingress.history("plain") == [(a,), (b,)], "the Service was without an address or moved twice"


def test_an_address_clusterd_chose_that_lb_ipam_gave_another_service_meanwhile_is_chosen_again(
    cluster: KubeAPI, ingress: IngressLog, ha: Any, cilium_operator: Any
) -> None:
    """clusterd picks the lowest free offset for a Service whose request lists no IPv6 address;
    LB-IPAM, meanwhile, gives the lowest free address to a Service that asks for nothing. The
    second one wins; clusterd must see its pick taken and choose again, not request it forever."""
    on_prefix_a(cluster, ha)
    os.kill(cilium_operator.pid, signal.SIGSTOP)
    try:
        service(cluster, "early")  # asks for nothing: LB-IPAM will pick (first, once it runs)
        service(cluster, "pinned-v4", {IPS: USER_V4}, families=("IPv4", "IPv6"))
        wait_until(lambda: "," in annotations(cluster, "pinned-v4").get(IPS, ""), what="clusterd's pick")
    finally:
        os.kill(cilium_operator.pid, signal.SIGCONT)
    (early,) = ingress.wait("early", one_address, "an A address")
    pinned = ingress.wait("pinned-v4", lambda ips: len(ips) == 2, "its IPv4 and an IPv6 address")
    assert USER_V4 in pinned and early not in pinned, (early, pinned)
    all_satisfied(cluster, "early", "pinned-v4")


def test_companion_mode_on_cilium_moves_the_service_and_a_companion_keeps_the_old_address(
    cluster: KubeAPI, ingress: IngressLog, ha: Any, record_property: Any
) -> None:
    """``dynamic-prefix.io/ha-mode: companion`` on Cilium: the MetalLB way, on LB-IPAM."""
    cd = on_prefix_a(cluster, ha)
    service(cluster, "web", {companions.HA_MODE: "companion"})
    (a,) = ingress.wait("web", one_address, "an A address")
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    b, on_a = at(B, a), companions.name("web", IPv6Network(A))
    ingress.wait("web", lambda ips: ips == (b,), "web on its B address alone")
    ingress.wait(on_a, lambda ips: ips == (a,), "the companion on web's A address")
    record_property(
        "cilium_handover_gap_s", round(ingress.first_seen(on_a, a) - ingress.first_seen("web", b), 3)
    )
    assert annotations(cluster, "web")[IPS] == b
    all_satisfied(cluster, "web", on_a)
    send(cd, 3, prefix(B), prefix(A, "withdrawn", valid=0))
    wait_pool(cluster, V4, block(B))
    core = k8s.CoreV1Api(cluster.admin())
    wait_until(lambda: on_a not in {s.metadata.name for s in core.list_namespaced_service(NS).items},
               what="the companion deleted at A's expiry")  # fmt: skip
    assert ingress.history("web") == [(a,), (b,)] and ingress.history(on_a) == [(a,)]
