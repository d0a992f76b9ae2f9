"""The load-balancer IPAMs the tests use are the real ones, and behave as docs/DESIGN facts say.

Cilium's LB-IPAM (in cilium-operator) and MetalLB's controller allocate from
their pools and write ``status.loadBalancer.ingress`` themselves; the facts
clusterd's design leans on are checked here against them: several addresses
of one family in ``lbipam.cilium.io/ips`` are fine, a request for an address
no pool holds is ``no_pool``, two pools on one range conflict, MetalLB
refuses two IPv6 addresses and hands an address over between Services on the
same ports only when it reprocesses them.
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.ground import testbin
from tests.ground.apiserver import KubeAPI
from tests.ground.lbipam import METALLB_NAMESPACE, CiliumOperator, MetallbController
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.apiserver

NS = "lbipam"


def lb_service(kube: KubeAPI, name: str, annotations: dict[str, str] | None = None, port: int = 80) -> None:
    core = k8s.CoreV1Api(kube.admin())
    if name == "first":
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
    core.create_namespaced_service(NS, k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name=name, annotations=annotations),
        spec=k8s.V1ServiceSpec(type="LoadBalancer", ip_families=["IPv6"], ports=[k8s.V1ServicePort(port=port)]),
    ))  # fmt: skip


def ingress(kube: KubeAPI, name: str) -> list[str]:
    svc = k8s.CoreV1Api(kube.admin()).read_namespaced_service(name, NS)
    return [i.ip for i in svc.status.load_balancer.ingress or []]


def satisfied(kube: KubeAPI, name: str) -> tuple[str, str] | None:
    svc = k8s.CoreV1Api(kube.admin()).read_namespaced_service(name, NS)
    c = next((c for c in svc.status.conditions or [] if c.type == "cilium.io/IPAMRequestSatisfied"), None)
    return (c.status, c.reason) if c else None


def test_cilium_operator_reports_the_pinned_version(cilium_operator: CiliumOperator) -> None:
    binary = testbin.find("cilium-operator-generic")
    assert binary is not None
    assert testbin.versions()["CILIUM_VERSION"] in testbin.cilium_operator_version(binary)


def test_cilium_lbipam_allocates_honours_two_ipv6_and_says_no_pool(
    kube: KubeAPI, cilium_operator: CiliumOperator
) -> None:
    k8s.CustomObjectsApi(kube.admin()).create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "p"},
        "spec": {"blocks": [{"start": "2001:db8:a::10", "stop": "2001:db8:a::1f"}]},
    })  # fmt: skip
    lb_service(kube, "first")
    wait_until(lambda: ingress(kube, "first") == ["2001:db8:a::10"], what="the pool's first address")
    lb_service(kube, "two", {"lbipam.cilium.io/ips": "2001:db8:a::15,2001:db8:a::16"})
    wait_until(lambda: sorted(ingress(kube, "two")) == ["2001:db8:a::15", "2001:db8:a::16"],
               what="both requested IPv6 addresses")  # fmt: skip
    lb_service(kube, "nowhere", {"lbipam.cilium.io/ips": "2001:db8:b::1"})
    wait_until(lambda: satisfied(kube, "nowhere") == ("False", "no_pool"), what="no_pool")
    assert ingress(kube, "nowhere") == []
    # Two pools on one address range: one is disabled, the newer (docs/troubleshooting.md says so).
    custom = k8s.CustomObjectsApi(kube.admin())
    custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "twin"},
        "spec": {"blocks": [{"start": "2001:db8:a::10", "stop": "2001:db8:a::1f"}]},
    })  # fmt: skip

    def conflicting() -> list[str]:
        pools = custom.list_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools")["items"]
        return [p["metadata"]["name"] for p in pools if any(
            c["type"] == "cilium.io/PoolConflict" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", []))]  # fmt: skip

    # Creation times have one-second resolution: within the same second either pool may be "newer".
    assert wait_until(conflicting, what="PoolConflict on one of two overlapping pools") in (["p"], ["twin"])


def metallb_pool(kube: KubeAPI) -> None:
    """MetalLB pool p: 2001:db8:a::10 to ::1f."""
    k8s.CustomObjectsApi(kube.admin()).create_namespaced_custom_object(
        "metallb.io", "v1beta1", METALLB_NAMESPACE, "ipaddresspools", {
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "p", "namespace": METALLB_NAMESPACE},
            "spec": {"addresses": ["2001:db8:a::10-2001:db8:a::1f"]},
        })  # fmt: skip


def test_metallb_assigns_from_its_pool_and_refuses_two_ipv6(
    kube: KubeAPI, metallb_controller: MetallbController
) -> None:
    metallb_pool(kube)
    lb_service(kube, "first")
    wait_until(lambda: ingress(kube, "first") == ["2001:db8:a::10"], what="the pool's first address")
    lb_service(kube, "two", {"metallb.io/loadBalancerIPs": "2001:db8:a::15,2001:db8:a::16"})

    def refused() -> bool:
        events = k8s.CoreV1Api(kube.admin()).list_namespaced_event(NS).items
        return any(e.involved_object.name == "two" and e.reason == "AllocationFailed" for e in events)

    wait_until(refused, what="MetalLB refusing two IPv6 addresses")
    assert ingress(kube, "two") == []


def test_metallb_hands_an_address_over_only_between_services_on_other_ports_or_on_a_reprocess(
    kube: KubeAPI, metallb_controller: MetallbController
) -> None:
    """What a hand-over of an address between two Services with the same ports meets on MetalLB.

    An address is shared only between Services with the same ``metallb.io/allow-shared-ip`` key
    and no port in common, so a second Service on the same ports is refused while the first holds
    the address, whatever the key. MetalLB does not retry a refused Service when the address frees:
    it waits until MetalLB reprocesses every Service, which it does when a Service is deleted, when
    a Service's sharing key changes, or when the pools change.
    """
    metallb_pool(kube)
    core = k8s.CoreV1Api(kube.admin())
    ips, shared = "metallb.io/loadBalancerIPs", "metallb.io/allow-shared-ip"

    def refused(name: str) -> bool:
        return any(e.involved_object.name == name and e.reason == "AllocationFailed"
                   for e in core.list_namespaced_event(NS).items)  # fmt: skip

    def request(name: str, annotations: dict[str, str]) -> None:
        core.patch_namespaced_service(name, NS, {"metadata": {"annotations": annotations}})

    lb_service(kube, "first", {ips: "2001:db8:a::10", shared: "k"})
    wait_until(lambda: ingress(kube, "first") == ["2001:db8:a::10"], what="first on ::10")
    lb_service(kube, "same-ports", {ips: "2001:db8:a::10", shared: "k"})
    wait_until(lambda: refused("same-ports"), what="::10 refused to a Service on the same port, same key")
    lb_service(kube, "other-port", {ips: "2001:db8:a::10", shared: "k"}, port=81)
    wait_until(lambda: ingress(kube, "other-port") == ["2001:db8:a::10"], what="::10 shared on another port")

    # The holder moves away on its own: the waiting Service is not given the freed address...
    lb_service(kube, "waits", {ips: "2001:db8:a::12"})
    wait_until(lambda: ingress(kube, "waits") == ["2001:db8:a::12"], what="waits on ::12")
    lb_service(kube, "takes", {ips: "2001:db8:a::12"})
    wait_until(lambda: refused("takes"), what="::12 refused while waits holds it")
    request("waits", {ips: "2001:db8:a::13"})
    wait_until(lambda: ingress(kube, "waits") == ["2001:db8:a::13"], what="waits moved to ::13")
    lb_service(kube, "barrier")  # MetalLB reconciles one Service at a time: the move was handled before it
    wait_until(lambda: len(ingress(kube, "barrier")) == 1, what="the barrier Service served")
    assert ingress(kube, "takes") == [], "MetalLB retried a refused Service when its address freed"
    # ...until the holder's sharing key changes with its move: every Service is reprocessed.
    request("waits", {ips: "2001:db8:a::14", shared: "moved"})
    wait_until(lambda: ingress(kube, "takes") == ["2001:db8:a::12"], what="takes given ::12 on the reprocess")
    assert ingress(kube, "waits") == ["2001:db8:a::14"]
