"""HA mode on the real API server: Services keep old addresses while DNS moves to the new prefix.

No Cilium runs here (there is no kubelet or datapath), so the test plays
LB-IPAM's one part that matters: it writes the address a Service got into
``status.loadBalancer.ingress`` through the status subresource, as Cilium
would. Everything else — the watch, the planning, the annotation writes, the
Events and conditions — is clusterd against kube-apiserver.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

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
from tests.ground.messages import post_state, prefix, state
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.apiserver

A, B, C = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64"
IPS, DNS = "lbipam.cilium.io/ips", "external-dns.alpha.kubernetes.io/target"
MLB = "metallb.io/loadBalancerIPs"
NS = "apps"


def addr(p: str, host: str = "2a") -> str:
    return f"{p.split('::/', maxsplit=1)[0]}:0:f000::{host}"


def service(kube: KubeAPI, name: str, ann: dict[str, str] | None = None, families: tuple[str, ...] = ("IPv6",),
            ingress: tuple[str, ...] = (), managed: bool = True) -> None:  # fmt: skip
    core = k8s.CoreV1Api(kube.admin())
    mine = {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/service-address-range": "lb"}
    annotations = {**(mine if managed else {}), **(ann or {})}
    core.create_namespaced_service(NS, k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name=name, annotations=annotations),
        spec=k8s.V1ServiceSpec(type="LoadBalancer", ip_families=list(families),
                               ip_family_policy="RequireDualStack" if len(families) > 1 else "SingleStack",
                               ports=[k8s.V1ServicePort(port=443)]),
    ))  # fmt: skip
    if ingress:
        give_address(kube, name, *ingress)


def give_address(kube: KubeAPI, name: str, *ips: str) -> None:
    """What Cilium LB-IPAM does when it assigns addresses."""
    k8s.CoreV1Api(kube.admin()).patch_namespaced_service_status(
        name, NS, {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}
    )


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


@pytest.fixture
def ha(cluster: KubeAPI, tmp_path: Path) -> Any:
    k8s.CoreV1Api(cluster.admin()).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
    started: list[Clusterd] = []

    def start(name: str = "clusterd") -> Clusterd:
        cd = Clusterd(cluster, tmp_path / name)
        started.append(cd)
        cd.wait_ready()
        return cd

    yield start
    for cd in started:
        cd.stop()


def send(cd: Clusterd, seq: int, *prefixes: dict[str, Any]) -> None:
    code, text = post_state(cd.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", seq, *prefixes))
    assert code == 200, text


def test_a_to_b_to_c_addresses_and_dns_at_every_step(cluster: KubeAPI, ha: Any) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "web", ingress=(addr(A),))
    wait_annotations(cluster, "web", addr(A), addr(A))
    send(cd, 2, prefix(B), prefix(A, "withdrawn", valid=7200))
    wait_annotations(cluster, "web", f"{addr(B)},{addr(A)}", addr(B))
    give_address(cluster, "web", addr(B), addr(A))  # Cilium honours the request
    send(cd, 3, prefix(C), prefix(B, "deprecated", valid=7200), prefix(A, "withdrawn", valid=7000))
    wait_annotations(cluster, "web", f"{addr(C)},{addr(B)},{addr(A)}", addr(C))
    send(cd, 4, prefix(A), prefix(C, "deprecated", valid=7200), prefix(B, "deprecated", valid=7000))
    # A comes back: one entry for it (no duplicate), B and C drain, maxPrefixHistory=2 holds.
    wait_annotations(cluster, "web", f"{addr(A)},{addr(C)},{addr(B)}", addr(A))
    wait_until(
        lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "Synced"), what="ServicesSynced"
    )
    wait_until(lambda: "AddressesUpdated" in events_for(cluster, "web"), what="Events on the Service")


def test_the_go_operators_bug_case_an_old_address_when_the_change_lands(cluster: KubeAPI, ha: Any) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(B), prefix(A, "deprecated", valid=7200))  # the change has already landed
    service(cluster, "legacy", ingress=(addr(A, "99"),))  # but the Service still holds its prefix-A address
    wait_annotations(cluster, "legacy", f"{addr(B, '99')},{addr(A, '99')}", addr(B, "99"))


def test_dual_stack_keeps_ipv4_and_removing_the_annotation_takes_back_only_ours(
    cluster: KubeAPI, ha: Any
) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "dual", {IPS: "192.0.2.10", DNS: "203.0.113.7"}, families=("IPv4", "IPv6"),
            ingress=("192.0.2.10", addr(A)))  # fmt: skip
    wait_annotations(cluster, "dual", f"{addr(A)},192.0.2.10", f"{addr(A)},203.0.113.7")
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "dual", f"{addr(B)},{addr(A)},192.0.2.10", f"{addr(B)},203.0.113.7")
    k8s.CoreV1Api(cluster.admin()).patch_namespaced_service(
        "dual", NS, {"metadata": {"annotations": {"dynamic-prefix.io/name": None}}}
    )
    wait_annotations(cluster, "dual", "192.0.2.10", "203.0.113.7")
    assert "dynamic-prefix.io/managed-annotations" not in annotations(cluster, "dual")


def test_pinned_suffix_and_one_outside_the_range(cluster: KubeAPI, ha: Any) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(A))
    service(
        cluster, "pinned", {"dynamic-prefix.io/host-suffix": "::f000:0:0:10"}
    )  # no address yet: not needed
    wait_annotations(cluster, "pinned", addr(A, "10"), addr(A, "10"))
    service(cluster, "wrong", {"dynamic-prefix.io/host-suffix": "::10"})
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "pinned", f"{addr(B, '10')},{addr(A, '10')}", addr(B, "10"))
    wait_until(lambda: "NotSynced" in events_for(cluster, "wrong"), what="an Event on the wrong Service")
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("False", "ServiceProblems"),
               what="ServicesSynced False")  # fmt: skip
    assert "outside range lb" in json.dumps(get_dp(cluster)["status"]["conditions"])
    assert IPS not in annotations(cluster, "wrong")


def test_a_service_without_an_address_waits_then_gets_one(cluster: KubeAPI, ha: Any) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "later")
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("False", "WaitingForAddress"),
               what="ServicesSynced False while a Service waits")  # fmt: skip
    assert "apps/later: waiting for an address" in json.dumps(get_dp(cluster)["status"]["conditions"])
    wait_until(lambda: "WaitingForAddress" in events_for(cluster, "later"), what="an Event on the Service")
    assert IPS not in annotations(cluster, "later")
    give_address(cluster, "later", addr(A, "77"))
    wait_annotations(cluster, "later", addr(A, "77"), addr(A, "77"))
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "Synced"), what="in step")


def test_simple_mode_leaves_services_alone(cluster: KubeAPI, ha: Any) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "simple", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "plain", {IPS: "2001:db8:a:0:f000::5"}, ingress=(addr(A, "5"),))
    rv = k8s.CoreV1Api(cluster.admin()).read_namespaced_service("plain", NS).metadata.resource_version
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_until(
        lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "SimpleMode"), what="SimpleMode"
    )
    assert k8s.CoreV1Api(cluster.admin()).read_namespaced_service("plain", NS).metadata.resource_version == rv


def test_a_restart_mid_transition_converges_to_the_same_annotations(cluster: KubeAPI, ha: Any) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    first = ha("first")
    send(first, 1, prefix(A))
    service(cluster, "svc", ingress=(addr(A),))
    wait_annotations(cluster, "svc", addr(A), addr(A))
    send(first, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "svc", f"{addr(B)},{addr(A)}", addr(B))
    expected = annotations(cluster, "svc")
    first.kill()
    # Someone tampers with our values while clusterd is down.
    k8s.CoreV1Api(cluster.admin()).patch_namespaced_service(
        "svc", NS, {"metadata": {"annotations": {IPS: addr(B)}}}
    )
    ha("second")
    wait_until(lambda: annotations(cluster, "svc") == expected, what="the same annotations after the restart")


def test_a_users_ipv4_in_the_annotation_gets_an_ipv6_chosen_by_clusterd(cluster: KubeAPI, ha: Any) -> None:
    # Cilium allocates exactly what lbipam.cilium.io/ips lists, so this Service would never get an
    # IPv6 address from it: clusterd picks the first offset no other Service holds or requests.
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    service(cluster, "holds", ingress=("2001:db8:a:0:f000::",), managed=False)
    service(cluster, "requests", {IPS: "2001:db8:a:0:f000::1"}, managed=False)
    cd = ha()
    service(cluster, "dual", {IPS: "192.0.2.10"}, families=("IPv4", "IPv6"), ingress=("192.0.2.10",))
    service(cluster, "dual2", {IPS: "192.0.2.11"}, families=("IPv4", "IPv6"), ingress=("192.0.2.11",))
    send(cd, 1, prefix(A))  # one pass plans both: the second must not choose what the first just chose
    wait_annotations(cluster, "dual", "2001:db8:a:0:f000::2,192.0.2.10", "2001:db8:a:0:f000::2")
    wait_annotations(cluster, "dual2", "2001:db8:a:0:f000::3,192.0.2.11", "2001:db8:a:0:f000::3")
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "Synced"), what="in step")
    # The choice sticks through a renumbering while Cilium has not answered yet.
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "dual", "2001:db8:b:0:f000::2,2001:db8:a:0:f000::2,192.0.2.10",
                     "2001:db8:b:0:f000::2")  # fmt: skip


def test_a_dual_stack_service_keeps_the_ipv4_it_was_given(cluster: KubeAPI, ha: Any) -> None:
    # An IPv6-only lbipam.cilium.io/ips would make Cilium drop the IPv4 it allocated.
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "both", families=("IPv6", "IPv4"), ingress=(addr(A), "192.0.2.20"))
    wait_annotations(cluster, "both", f"{addr(A)},192.0.2.20", addr(A))
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "both", f"{addr(B)},{addr(A)},192.0.2.20", addr(B))
    # clusterd wrote the IPv4 request, so it takes it back with the rest.
    k8s.CoreV1Api(cluster.admin()).patch_namespaced_service(
        "both", NS, {"metadata": {"annotations": {"dynamic-prefix.io/name": None}}}
    )
    wait_annotations(cluster, "both", None, None)


def test_services_stop_requesting_old_addresses_before_the_pool_drops_their_block(
    cluster: KubeAPI, ha: Any
) -> None:
    # Cilium marks a request for an address no pool holds IPAMRequestSatisfied=False no_pool and
    # keeps it False after the request is fixed: the Service must be written before the pool shrinks.
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    create_pool(cluster, "lb-pool", [V4])
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "web", ingress=(addr(A),))
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "web", f"{addr(B)},{addr(A)}", addr(B))
    wait_until(lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(B), block(A)], what="B+A")
    send(cd, 3, prefix(B), prefix(A, "withdrawn", valid=0))
    wait_annotations(cluster, "web", addr(B), addr(B))
    wait_until(lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(B)], what="A dropped")
    # One etcd holds both objects here, so its revision (the resourceVersion) orders the two writes.
    svc_rv = int(k8s.CoreV1Api(cluster.admin()).read_namespaced_service("web", NS).metadata.resource_version)
    pool_rv = int(get_pool(cluster, "lb-pool")["metadata"]["resourceVersion"])
    assert svc_rv < pool_rv, "the pool dropped prefix A's block while the Service still requested A"


def test_metallb_services_move_to_the_new_address_and_report_what_ha_mode_cannot_keep(
    cluster: KubeAPI, ha: Any
) -> None:
    # MetalLB refuses two IPv6 addresses in metallb.io/loadBalancerIPs (it then allocates nothing).
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "mlb", {"dynamic-prefix.io/ip-annotation": "metallb"}, ingress=(addr(A),))
    wait_annotations(cluster, "mlb", addr(A), addr(A), key=MLB)
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "Synced"), what="in step")
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_annotations(cluster, "mlb", addr(B), addr(B), key=MLB)
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("False", "MetalLBOneAddressPerFamily"),
               what="ServicesSynced names the MetalLB limitation")  # fmt: skip
    assert f"old connections on {addr(A)} are not kept" in json.dumps(get_dp(cluster)["status"]["conditions"])
    wait_until(
        lambda: "MetalLBOneAddressPerFamily" in events_for(cluster, "mlb"), what="an Event on the Service"
    )


def services_synced_message(kube: KubeAPI) -> str:
    c = next(
        (c for c in get_dp(kube).get("status", {}).get("conditions", []) if c["type"] == "ServicesSynced"), {}
    )
    return str(c.get("message", ""))


def test_a_service_annotated_later_is_counted_at_once_and_logged_under_its_own_name(
    cluster: KubeAPI, ha: Any
) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition={"mode": "ha", "maxPrefixHistory": 2})
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "first", ingress=(addr(A),))
    wait_until(lambda: services_synced_message(cluster) == "1 Service(s) in step", what="one Service counted")
    # A Service that already has its address is annotated later: no wait or problem changes,
    # only the count; nothing else (no message, no timer) makes the DynamicPrefix reconcile.
    core = k8s.CoreV1Api(cluster.admin())
    core.create_namespaced_service(NS, k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name="second"),
        spec=k8s.V1ServiceSpec(type="LoadBalancer", ip_families=["IPv6"], ports=[k8s.V1ServicePort(port=443)]),
    ))  # fmt: skip
    give_address(cluster, "second", addr(A, "2b"))
    core.patch_namespaced_service("second", NS, {"metadata": {"annotations": {
        "dynamic-prefix.io/name": "home", "dynamic-prefix.io/service-address-range": "lb"}}})  # fmt: skip
    wait_until(lambda: IPS in annotations(cluster, "second"), what="the second Service synced")
    wait_until(lambda: services_synced_message(cluster) == "2 Service(s) in step", timeout=5,
               what="the condition to count the second Service")  # fmt: skip
    k8s.CoreV1Api(cluster.admin()).delete_namespaced_service("first", NS)
    wait_until(lambda: services_synced_message(cluster) == "1 Service(s) in step", timeout=5,
               what="the condition to drop the deleted Service")  # fmt: skip
    line = next(x for x in cd.log_lines if "reason=AddressesUpdated" in x and "second" in x)
    assert "service=apps/second" in line and "dynamicprefix=home" in line, line
