"""HA mode on the real API server and the real Cilium LB-IPAM: Services keep old addresses while DNS moves.

cilium-operator (the ``cilium_operator`` fixture) allocates every Service
address and writes ``status.loadBalancer.ingress``; clusterd keeps the pool
and the Services' requested addresses (``lbipam.cilium.io/ips``) in step with
the prefix. The tests never write a Service's status: which address a Service
gets is LB-IPAM's choice, so the tests read it and derive the rest from its
host offset.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network, ip_address
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from tests.clusterd.conftest import NS
from tests.clusterd.test_clusterd import (
    RANGE,
    V4,
    block,
    condition,
    create_dp,
    create_pool,
    events_for,
    get_dp,
    get_pool,
)
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import WEBHOOK_SECRET, Clusterd
from tests.ground.lbipam import IngressLog
from tests.ground.messages import post_state, prefix, state
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.apiserver

A, B, C = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64"
IPS, DNS = "lbipam.cilium.io/ips", "external-dns.alpha.kubernetes.io/target"
MLB = "metallb.io/loadBalancerIPs"
HA = {"mode": "ha", "maxPrefixHistory": 2}
SIMPLE = {"mode": "simple", "maxPrefixHistory": 2}


def addr(p: str, host: str = "2a") -> str:
    return f"{p.split('::/', maxsplit=1)[0]}:0:f000::{host}"


def at(p: str, address: str) -> str:
    """``address``'s host part in prefix ``p`` (the same offset in the range)."""
    net = IPv6Network(p)
    return str(net[int(IPv6Address(address)) & int(net.hostmask)])


def in_range(p: str, address: str) -> bool:
    """Inside the ``lb`` address range (``::f000:0:0:0`` - ``::ffff:ffff:ffff:ffff``) of prefix ``p``."""
    a = ip_address(address)
    net = IPv6Network(p)
    return isinstance(a, IPv6Address) and a in net and (int(a) & int(net.hostmask)) >> 60 == 0xF


def service(kube: KubeAPI, name: str, ann: dict[str, str] | None = None, families: tuple[str, ...] = ("IPv6",),
            policy: str | None = None, managed: bool = True) -> None:  # fmt: skip
    annotations = (
        {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/service-address-range": "lb"} if managed else {}
    )
    k8s.CoreV1Api(kube.admin()).create_namespaced_service(NS, k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name=name, annotations={**annotations, **(ann or {})}),
        spec=k8s.V1ServiceSpec(type="LoadBalancer", ip_families=list(families),
                               ip_family_policy=policy or ("RequireDualStack" if len(families) > 1 else "SingleStack"),
                               ports=[k8s.V1ServicePort(port=443)]),
    ))  # fmt: skip


def annotations(kube: KubeAPI, name: str) -> dict[str, str]:
    return dict(k8s.CoreV1Api(kube.admin()).read_namespaced_service(name, NS).metadata.annotations or {})


def wait_annotations(kube: KubeAPI, name: str, ips: str | None, dns: str | None, timeout: float = 15,
                     key: str = IPS) -> None:  # fmt: skip
    def ok() -> bool:
        a = annotations(kube, name)
        return a.get(key) == ips and a.get(DNS) == dns

    try:
        wait_until(ok, timeout, f"{name}: {key}={ips} {DNS}={dns}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; it has {annotations(kube, name)}") from None


def wait_pool(kube: KubeAPI, *blocks: dict[str, str], name: str = "lb-pool") -> None:
    want = list(blocks)
    wait_until(lambda: get_pool(kube, name)["spec"]["blocks"] == want, what=f"{name} = {want}")


def send(cd: Clusterd, seq: int, *prefixes: dict[str, Any]) -> None:
    code, text = post_state(cd.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", seq, *prefixes))
    assert code == 200, text


def one_address(ips: tuple[str, ...]) -> bool:
    return len(ips) == 1


def on_prefix_a(
    cluster: KubeAPI, ha: Any, transition: dict[str, Any] = HA, name: str = "clusterd"
) -> Clusterd:
    """A DynamicPrefix on prefix A, clusterd running, the pool with the user's IPv4 block and A's block."""
    create_dp(cluster, addressRanges=[RANGE], transition=transition)
    create_pool(cluster, "lb-pool", [V4])
    cd: Clusterd = ha(name)
    send(cd, 1, prefix(A))
    wait_pool(cluster, V4, block(A))
    return cd


def prefix_a_with_web(cluster: KubeAPI, ingress: IngressLog, ha: Any) -> tuple[Clusterd, str]:
    """HA mode, prefix A, and Service web holding an A address it also requests."""
    cd = on_prefix_a(cluster, ha)
    service(cluster, "web")
    (a,) = ingress.wait("web", one_address, "an A address from LB-IPAM")
    assert in_range(A, a), a
    wait_annotations(cluster, "web", a, a)
    return cd, a


def test_a_to_b_to_c_addresses_and_dns_at_every_step(cluster: KubeAPI, ingress: IngressLog, ha: Any) -> None:
    cd, a = prefix_a_with_web(cluster, ingress, ha)
    send(cd, 2, prefix(B), prefix(A, "withdrawn", valid=7200))
    wait_annotations(cluster, "web", f"{at(B, a)},{a}", at(B, a))
    ingress.wait("web", lambda ips: set(ips) == {at(B, a), a}, "LB-IPAM honouring the request")
    send(cd, 3, prefix(C), prefix(B, "deprecated", valid=7200), prefix(A, "withdrawn", valid=7000))
    wait_annotations(cluster, "web", f"{at(C, a)},{at(B, a)},{a}", at(C, a))
    send(cd, 4, prefix(A), prefix(C, "deprecated", valid=7200), prefix(B, "deprecated", valid=7000))
    # A comes back: one entry for it (no duplicate), B and C drain, maxPrefixHistory=2 holds.
    wait_annotations(cluster, "web", f"{a},{at(C, a)},{at(B, a)}", a)
    ingress.wait("web", lambda ips: set(ips) == {a, at(B, a), at(C, a)}, "all three addresses")
    assert ingress.held_throughout("web", a), ingress.history("web")
    wait_until(
        lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "Synced"), what="ServicesSynced"
    )
    wait_until(lambda: "AddressesUpdated" in events_for(cluster, "web"), what="Events on the Service")


def test_the_go_operators_bug_case_an_old_address_when_the_change_lands(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    cd = on_prefix_a(cluster, ha)
    service(cluster, "legacy", managed=False)  # it gets an A address before it opts in
    (a,) = ingress.wait("legacy", one_address, "an address from LB-IPAM")
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))  # the change has landed
    wait_pool(cluster, V4, block(B), block(A))
    k8s.CoreV1Api(cluster.admin()).patch_namespaced_service("legacy", NS, {"metadata": {"annotations": {
        "dynamic-prefix.io/name": "home", "dynamic-prefix.io/service-address-range": "lb"}}})  # fmt: skip
    # The offset comes from the A address it holds, not from the current prefix.
    wait_annotations(cluster, "legacy", f"{at(B, a)},{a}", at(B, a))
    ingress.wait("legacy", lambda ips: set(ips) == {at(B, a), a}, "both addresses")
    assert ingress.held_throughout("legacy", a), ingress.history("legacy")


def test_dual_stack_keeps_ipv4_and_removing_the_annotation_takes_back_only_ours(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    cd = on_prefix_a(cluster, ha)
    service(cluster, "dual", {IPS: "192.0.2.10", DNS: "203.0.113.7"}, families=("IPv4", "IPv6"))
    # LB-IPAM allocates exactly what the annotation lists, so clusterd chooses the first IPv6 address.
    ips = ingress.wait(
        "dual", lambda ips: len(ips) == 2, "an IPv6 address beside the user's IPv4", timeout=20
    )
    (a,) = [ip for ip in ips if ":" in ip]
    assert "192.0.2.10" in ips and in_range(A, a), ips
    wait_annotations(cluster, "dual", f"{a},192.0.2.10", f"{a},203.0.113.7")
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "dual", f"{at(B, a)},{a},192.0.2.10", f"{at(B, a)},203.0.113.7")
    ingress.wait("dual", lambda ips: set(ips) == {at(B, a), a, "192.0.2.10"}, "three addresses")
    k8s.CoreV1Api(cluster.admin()).patch_namespaced_service(
        "dual", NS, {"metadata": {"annotations": {"dynamic-prefix.io/name": None}}}
    )
    wait_annotations(cluster, "dual", "192.0.2.10", "203.0.113.7")
    assert "dynamic-prefix.io/managed-annotations" not in annotations(cluster, "dual")
    assert ingress.held_throughout("dual", "192.0.2.10"), ingress.history("dual")


def test_pinned_suffix_and_one_outside_the_range(cluster: KubeAPI, ingress: IngressLog, ha: Any) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition=HA)
    create_pool(cluster, "lb-pool", [V4])
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "pinned", {"dynamic-prefix.io/host-suffix": "::f000:0:0:10"})  # no address needed first
    wait_annotations(cluster, "pinned", addr(A, "10"), addr(A, "10"))
    ingress.wait("pinned", lambda ips: ips == (addr(A, "10"),), "the pinned address from LB-IPAM")
    service(cluster, "wrong", {"dynamic-prefix.io/host-suffix": "::10"})
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "pinned", f"{addr(B, '10')},{addr(A, '10')}", addr(B, "10"))
    wait_until(lambda: "NotSynced" in events_for(cluster, "wrong"), what="an Event on the wrong Service")
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("False", "ServiceProblems"),
               what="ServicesSynced False")  # fmt: skip
    assert "outside range lb" in json.dumps(get_dp(cluster)["status"]["conditions"])
    assert IPS not in annotations(cluster, "wrong")


def test_a_service_without_an_address_waits_then_gets_one(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition=HA)
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "later")  # no pool holds an address for it yet
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("False", "WaitingForAddress"),
               what="ServicesSynced False while a Service waits")  # fmt: skip
    assert "apps/later: waiting for an address" in json.dumps(get_dp(cluster)["status"]["conditions"])
    wait_until(lambda: "WaitingForAddress" in events_for(cluster, "later"), what="an Event on the Service")
    assert IPS not in annotations(cluster, "later")
    create_pool(cluster, "lb-pool", [V4])  # clusterd fills it with A's block; LB-IPAM allocates from it
    (a,) = ingress.wait("later", one_address, "an address from LB-IPAM")
    assert in_range(A, a), a
    wait_annotations(cluster, "later", a, a)
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "Synced"), what="in step")


def test_simple_mode_leaves_services_alone(cluster: KubeAPI, ingress: IngressLog, ha: Any) -> None:
    cd = on_prefix_a(cluster, ha, SIMPLE)
    service(cluster, "plain", {IPS: addr(A, "5")})
    ingress.wait("plain", lambda ips: ips == (addr(A, "5"),), "the requested address from LB-IPAM")
    rv = k8s.CoreV1Api(cluster.admin()).read_namespaced_service("plain", NS).metadata.resource_version
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_pool(cluster, V4, block(B), block(A))
    wait_until(
        lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "SimpleMode"), what="SimpleMode"
    )
    assert k8s.CoreV1Api(cluster.admin()).read_namespaced_service("plain", NS).metadata.resource_version == rv


def test_a_restart_mid_transition_converges_to_the_same_annotations(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    first = on_prefix_a(cluster, ha, name="first")
    service(cluster, "svc")
    (a,) = ingress.wait("svc", one_address, "an address from LB-IPAM")
    wait_annotations(cluster, "svc", a, a)
    send(first, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "svc", f"{at(B, a)},{a}", at(B, a))
    expected = annotations(cluster, "svc")
    first.kill()
    # Someone tampers with our values while clusterd is down (LB-IPAM drops the A address at once).
    k8s.CoreV1Api(cluster.admin()).patch_namespaced_service(
        "svc", NS, {"metadata": {"annotations": {IPS: at(B, a)}}}
    )
    ha("second")
    wait_until(lambda: annotations(cluster, "svc") == expected, what="the same annotations after the restart")
    ingress.wait("svc", lambda ips: set(ips) == {at(B, a), a}, "both addresses back")


def test_a_users_ipv4_in_the_annotation_gets_an_ipv6_chosen_by_clusterd(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    # Cilium allocates exactly what lbipam.cilium.io/ips lists, so this Service would never get an
    # IPv6 address from it: clusterd picks the first offset no other Service holds or requests.
    first = on_prefix_a(cluster, ha, name="first")
    requested = addr(A, "1")
    service(cluster, "requests", {IPS: requested}, managed=False)
    ingress.wait("requests", lambda ips: ips == (requested,), "the address it requests")
    service(cluster, "holds", managed=False)
    (held,) = ingress.wait("holds", one_address, "an address LB-IPAM chose")
    start = IPv6Address(block(A)["start"])
    d1, d2 = [str(a) for a in (start + i for i in range(4)) if str(a) not in (held, requested)][:2]
    first.kill()  # the two dual-stack Services appear while clusterd is down ...
    service(cluster, "dual", {IPS: "192.0.2.10"}, families=("IPv4", "IPv6"))
    service(cluster, "dual2", {IPS: "192.0.2.11"}, families=("IPv4", "IPv6"))
    ingress.wait("dual", lambda ips: ips == ("192.0.2.10",), "only the IPv4 address it lists")
    ingress.wait("dual2", lambda ips: ips == ("192.0.2.11",), "only the IPv4 address it lists")
    cd = ha("second")  # ... so one pass plans both: the second must not choose what the first just chose
    wait_annotations(cluster, "dual", f"{d1},192.0.2.10", d1)
    wait_annotations(cluster, "dual2", f"{d2},192.0.2.11", d2)
    ingress.wait("dual", lambda ips: set(ips) == {d1, "192.0.2.10"}, "LB-IPAM allocating clusterd's choice")
    ingress.wait("dual2", lambda ips: set(ips) == {d2, "192.0.2.11"}, "LB-IPAM allocating clusterd's choice")
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "Synced"), what="in step")
    # The choice sticks through a renumbering.
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "dual", f"{at(B, d1)},{d1},192.0.2.10", at(B, d1))
    ingress.wait("dual", lambda ips: set(ips) == {at(B, d1), d1, "192.0.2.10"}, "three addresses")
    assert ingress.held_throughout("dual", "192.0.2.10"), ingress.history("dual")
    assert ingress.held_throughout("dual", d1), ingress.history("dual")


def test_a_dual_stack_service_keeps_the_ipv4_it_was_given(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    # An IPv6-only lbipam.cilium.io/ips would make Cilium drop the IPv4 it allocated.
    cd = on_prefix_a(cluster, ha)
    service(cluster, "both", families=("IPv6", "IPv4"))
    ips = ingress.wait("both", lambda ips: len(ips) == 2, "an IPv6 and an IPv4 address from LB-IPAM")
    (a,) = [ip for ip in ips if ":" in ip]
    (v4,) = [ip for ip in ips if ":" not in ip]
    assert in_range(A, a), ips
    wait_annotations(cluster, "both", f"{a},{v4}", a)
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "both", f"{at(B, a)},{a},{v4}", at(B, a))
    ingress.wait("both", lambda ips: set(ips) == {at(B, a), a, v4}, "three addresses")
    assert ingress.held_throughout("both", v4), ingress.history("both")
    # clusterd wrote the IPv4 request, so it takes it back with the rest.
    k8s.CoreV1Api(cluster.admin()).patch_namespaced_service(
        "both", NS, {"metadata": {"annotations": {"dynamic-prefix.io/name": None}}}
    )
    wait_annotations(cluster, "both", None, None)


def first_version(list_fn: Callable[..., Any], since: str, match: Callable[[Any], bool], *args: str) -> int:
    """The resourceVersion of the first object version after ``since`` that ``match``es, replayed by a watch."""
    w = watch.Watch()
    for ev in w.stream(list_fn, *args, resource_version=since, timeout_seconds=3):
        obj = ev["object"]
        if match(obj):
            w.stop()
            return int(
                obj["metadata"]["resourceVersion"] if isinstance(obj, dict) else obj.metadata.resource_version
            )
    raise AssertionError(f"no version after {since} matched")


def test_services_stop_requesting_old_addresses_before_the_pool_drops_their_block(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    # Cilium marks a request for an address no pool holds IPAMRequestSatisfied=False no_pool and
    # keeps it False after the request is fixed: the Service must be written before the pool shrinks.
    cd = on_prefix_a(cluster, ha)
    service(cluster, "web")
    (a,) = ingress.wait("web", one_address, "an address from LB-IPAM")
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "web", f"{at(B, a)},{a}", at(B, a))
    wait_pool(cluster, V4, block(B), block(A))
    core, custom = k8s.CoreV1Api(cluster.admin()), k8s.CustomObjectsApi(cluster.admin())
    since = core.list_namespaced_service(NS).metadata.resource_version
    send(cd, 3, prefix(B), prefix(A, "withdrawn", valid=0))
    wait_annotations(cluster, "web", at(B, a), at(B, a))
    wait_pool(cluster, V4, block(B))
    # One etcd holds both objects, so its revision (the resourceVersion) orders the two writes; the
    # watch replays every version since, as LB-IPAM's own status writes bump both objects too.
    svc_rv = first_version(core.list_namespaced_service, since,
                           lambda s: s.metadata.name == "web" and a not in (s.metadata.annotations or {}).get(IPS, ""),
                           NS)  # fmt: skip
    pool_rv = first_version(custom.list_cluster_custom_object, since,
                            lambda p: p["metadata"]["name"] == "lb-pool" and block(A) not in p["spec"]["blocks"],
                            "cilium.io", "v2", "ciliumloadbalancerippools")  # fmt: skip
    assert svc_rv < pool_rv, "the pool dropped prefix A's block while the Service still requested A"
    ingress.wait("web", lambda ips: ips == (at(B, a),), "only its B address")
    assert ingress.held_throughout("web", at(B, a)), ingress.history("web")


def services_synced_message(kube: KubeAPI) -> str:
    c = next(
        (c for c in get_dp(kube).get("status", {}).get("conditions", []) if c["type"] == "ServicesSynced"), {}
    )
    return str(c.get("message", ""))


def test_a_service_annotated_later_is_counted_at_once_and_logged_under_its_own_name(
    cluster: KubeAPI, ingress: IngressLog, ha: Any
) -> None:
    cd = on_prefix_a(cluster, ha)
    service(cluster, "first")
    ingress.wait("first", one_address, "an address from LB-IPAM")
    wait_until(lambda: services_synced_message(cluster) == "1 Service(s) in step", what="one Service counted")
    # A Service that already has its address is annotated later: no wait or problem changes,
    # only the count; nothing else (no message, no timer) makes the DynamicPrefix reconcile.
    service(cluster, "second", managed=False)
    ingress.wait("second", one_address, "an address from LB-IPAM")
    core = k8s.CoreV1Api(cluster.admin())
    core.patch_namespaced_service("second", NS, {"metadata": {"annotations": {
        "dynamic-prefix.io/name": "home", "dynamic-prefix.io/service-address-range": "lb"}}})  # fmt: skip
    wait_until(lambda: IPS in annotations(cluster, "second"), what="the second Service synced")
    wait_until(lambda: services_synced_message(cluster) == "2 Service(s) in step", timeout=5,
               what="the condition to count the second Service")  # fmt: skip
    core.delete_namespaced_service("first", NS)
    wait_until(lambda: services_synced_message(cluster) == "1 Service(s) in step", timeout=5,
               what="the condition to drop the deleted Service")  # fmt: skip
    line = next(x for x in cd.log_lines if "reason=AddressesUpdated" in x and "second" in x)
    assert "service=apps/second" in line and "dynamicprefix=home" in line, line
