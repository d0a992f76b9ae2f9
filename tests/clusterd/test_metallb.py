"""MetalLB's IPAddressPool kept in step by clusterd, on the real MetalLB controller.

clusterd writes the pool's ``spec.addresses`` (``start-end`` for the address
range); MetalLB's controller allocates from it and writes every Service's
``status.loadBalancer.ingress``, which a watch records (tests/ground/lbipam.py).
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from tests.clusterd.conftest import NS
from tests.clusterd.test_clusterd import RANGE, block, condition, create_dp, events_for, get_dp
from tests.clusterd.test_ha_services import (
    HA,
    MLB,
    SIMPLE,
    annotations,
    at,
    in_range,
    one_address,
    send,
    service,
    wait_annotations,
)
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import Clusterd
from tests.ground.lbipam import METALLB_NAMESPACE, IngressLog
from tests.ground.messages import prefix
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.apiserver

A, B = "2001:db8:a::/64", "2001:db8:b::/64"
POOLS = ("metallb.io", "v1beta1", METALLB_NAMESPACE, "ipaddresspools")
USER = "192.0.2.0/28"
MANAGED = "dynamic-prefix.io/managed"


def span(p: str) -> str:
    """The ``lb`` range of prefix ``p`` as MetalLB writes a range."""
    b = block(p)
    return f"{b['start']}-{b['stop']}"


def metallb_pool(kube: KubeAPI, *addresses: str, name: str = "lb") -> None:
    """An IPAddressPool that follows DynamicPrefix home's ``lb`` range, with the user's own entries."""
    k8s.CustomObjectsApi(kube.admin()).create_namespaced_custom_object(*POOLS, {
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": METALLB_NAMESPACE,
                     "annotations": {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/address-range": "lb"}},
        "spec": {"addresses": list(addresses)},
    })  # fmt: skip


def pool(kube: KubeAPI, name: str = "lb") -> dict[str, Any]:
    return dict(k8s.CustomObjectsApi(kube.admin()).get_namespaced_custom_object(*POOLS, name))


def wait_addresses(kube: KubeAPI, *want: str) -> None:
    wait_until(lambda: pool(kube)["spec"]["addresses"] == list(want), what=f"the pool = {list(want)}")


class PoolVersions:
    """Every distinct (addresses, ownership record) the pool went through, from a watch.

    MetalLB writes the pool's status too; only changes of what clusterd writes count.
    """

    def __init__(self, kube: KubeAPI) -> None:
        self.api = k8s.CustomObjectsApi(kube.admin())
        self.seen: list[tuple[tuple[str, ...], str | None]] = []
        self._watch = watch.Watch()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # stop() ends the stream
            for ev in self._watch.stream(self.api.list_namespaced_custom_object, *POOLS):
                o = ev["object"]
                v = (
                    tuple(o["spec"].get("addresses") or []),
                    (o["metadata"].get("annotations") or {}).get(MANAGED),
                )
                if not self.seen or self.seen[-1] != v:
                    self.seen.append(v)

    def changes(self) -> int:
        """Versions after the one the test created."""
        return len(self.seen) - 1

    def stop(self) -> None:
        self._watch.stop()


def writes(cd: Clusterd) -> float:
    return cd.metric("dynamic_prefix_pool_syncs_total", kind="IPAddressPool", result="written")


def unchanged(cd: Clusterd) -> float:
    return cd.metric("dynamic_prefix_pool_syncs_total", kind="IPAddressPool", result="unchanged")


def test_the_metallb_pool_follows_a_b_a_expiry_with_exactly_the_writes_that_change_it(
    cluster: KubeAPI, metallb_ingress: IngressLog, ha: Any
) -> None:
    """Every write changes the pool, a repeat writes nothing, the user's entry is never touched."""
    create_dp(cluster, addressRanges=[RANGE], transition=SIMPLE)
    metallb_pool(cluster, USER)
    versions = PoolVersions(cluster)
    try:
        cd = ha()
        steps = [
            ((prefix(A),), (USER, span(A))),
            ((prefix(B), prefix(A, "deprecated", valid=7200)), (USER, span(B), span(A))),
            ((prefix(A), prefix(B, "deprecated", valid=7200)), (USER, span(A), span(B))),
            ((prefix(A), prefix(B, "withdrawn", valid=0)), (USER, span(A))),
        ]
        for seq, (prefixes, want) in enumerate(steps, 1):
            send(cd, seq, *prefixes)
            wait_addresses(cluster, *want)
            wait_until(lambda seq=seq: writes(cd) == versions.changes() == seq,
                       what=f"one write for step {seq} ({versions.seen})")  # fmt: skip
            if seq == 1:  # MetalLB allocates from the block clusterd wrote
                service(cluster, "plain", managed=False)
                (a,) = metallb_ingress.wait("plain", one_address, "an A address from MetalLB")
                assert in_range(A, a), a
        record = json.loads(pool(cluster)["metadata"]["annotations"][MANAGED])
        assert record == [span(A)], "the record owns the user's entry or a stale range"
        wait_until(
            lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced"), what="PoolsSynced"
        )

        planned = unchanged(cd)
        send(cd, 5, prefix(A), prefix(B, "withdrawn", valid=0))  # the same state again: nothing to write
        wait_until(lambda: unchanged(cd) > planned, what="the repeat planned")
        assert writes(cd) == versions.changes() == len(steps), versions.seen
        assert metallb_ingress.held_throughout("plain", a), metallb_ingress.history("plain")
    finally:
        versions.stop()


def test_a_service_on_the_old_block_when_metallb_loses_it(
    cluster: KubeAPI, metallb_ingress: IngressLog, ha: Any
) -> None:
    """What MetalLB does when the old prefix's range leaves the pool (simple mode: nothing pins it).

    New Services get addresses from B; a Service MetalLB gave an A address is given a B address
    (a new one: its old connections end); one whose user pinned an A address loses it.
    """
    create_dp(cluster, addressRanges=[RANGE], transition=SIMPLE)
    metallb_pool(cluster, USER)
    cd = ha()
    send(cd, 1, prefix(A))
    wait_addresses(cluster, USER, span(A))
    service(cluster, "old", managed=False)
    (a,) = metallb_ingress.wait("old", one_address, "an A address")
    pinned = at(A, "::f000:0:0:77")
    service(cluster, "pinned", {MLB: pinned}, managed=False)
    metallb_ingress.wait("pinned", lambda ips: ips == (pinned,), "the A address its user asked for")

    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_addresses(cluster, USER, span(B), span(A))
    service(cluster, "on-b", {MLB: at(B, "::f000:0:0:99")}, managed=False)
    metallb_ingress.wait(
        "on-b", lambda ips: ips == (at(B, "::f000:0:0:99"),), "a B address from the new block"
    )
    assert metallb_ingress.current("old") == (a,), "MetalLB moved a Service while A was still in the pool"

    send(cd, 3, prefix(B), prefix(A, "withdrawn", valid=0))
    wait_addresses(cluster, USER, span(B))
    (moved,) = metallb_ingress.wait("old", lambda ips: len(ips) == 1 and in_range(B, ips[0]), "a B address")
    assert metallb_ingress.history("old") in ([(a,), (moved,)], [(a,), (), (moved,)]), (
        metallb_ingress.history("old")
    )
    metallb_ingress.wait("pinned", lambda ips: ips == (), "no address: the one asked for is in no pool")
    wait_until(lambda: "AllocationFailed" in events_for(cluster, "pinned"), what="MetalLB's AllocationFailed")
    service(cluster, "new", managed=False)
    (new,) = metallb_ingress.wait("new", one_address, "an address")
    assert in_range(B, new), new


def test_metallb_ha_limitation_is_reported_not_written(
    cluster: KubeAPI, metallb_ingress: IngressLog, ha: Any
) -> None:
    """MetalLB holds one address per family: clusterd moves the Service to B and says what is lost.

    It must not ask for two IPv6 addresses (MetalLB then allocates nothing at all). clusterd writes
    the pool: B's range is in it before the Service asks for its B address.
    """
    create_dp(cluster, addressRanges=[RANGE], transition=HA)
    metallb_pool(cluster)
    cd = ha()
    send(cd, 1, prefix(A))
    wait_addresses(cluster, span(A))
    service(cluster, "web", {"dynamic-prefix.io/ip-annotation": "metallb"})
    (a,) = metallb_ingress.wait("web", one_address, "an A address from MetalLB")
    assert in_range(A, a), a
    wait_annotations(cluster, "web", a, a, key=MLB)
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("True", "Synced"), what="in step")
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))

    def requested_v6() -> list[str]:
        value = annotations(cluster, "web").get(MLB, "")
        return [ip for ip in value.split(",") if ":" in ip]

    def reported() -> bool:
        return "MetalLBOneAddressPerFamily" in events_for(cluster, "web")

    # clusterd either reports the limit (right) or asks for both addresses (what MetalLB refuses).
    wait_until(lambda: reported() or len(requested_v6()) > 1, what="clusterd acting on prefix B for web")
    assert len(requested_v6()) <= 1, f"clusterd asked MetalLB for {requested_v6()}, which it refuses"
    wait_annotations(cluster, "web", at(B, a), at(B, a), key=MLB)
    wait_addresses(cluster, span(B), span(A))
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced") == ("False", "MetalLBOneAddressPerFamily"),
               what="ServicesSynced names the MetalLB limitation")  # fmt: skip
    assert f"old connections on {a} are not kept" in json.dumps(get_dp(cluster)["status"]["conditions"])
    assert any(
        e.type == "Warning" and e.reason == "MetalLBOneAddressPerFamily"
        for e in k8s.CoreV1Api(cluster.admin()).list_namespaced_event(NS).items
        if e.involved_object.name == "web"
    )
    metallb_ingress.wait("web", lambda ips: ips == (at(B, a),), "MetalLB moving web to its B address")
    assert [ips for ips in metallb_ingress.history("web") if ips] == [(a,), (at(B, a),)], (
        f"web held an address clusterd did not ask for: {metallb_ingress.history('web')}"
    )
    assert "AllocationFailed" not in events_for(cluster, "web"), "MetalLB refused a request"
