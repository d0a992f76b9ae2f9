"""BGP for subnets on the real API server with Cilium's own CRDs (cilium.io/v2 CiliumBGPAdvertisement).

One advertisement per subnet with ``bgp.advertise: true``: created with the
selector of the pools carved from the subnet and the subnet's community,
owned by the DynamicPrefix and labelled for a CiliumBGPPeerConfig; left alone
by a renumbering (it selects Services by label); updated when the community
or a pool's selector changes; deleted when advertising is turned off. The
status lists it. No BGP speaker runs here (cilium-agent needs a datapath):
what is checked is what Cilium's BGP control plane reads.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

from tests.clusterd.test_clusterd import create_dp, get_dp, get_pool, send
from tests.ground import crds
from tests.ground.apiserver import KubeAPI, apply_crds, delete_crd
from tests.ground.messages import prefix, state
from tests.ground.mosquitto import Mosquitto
from tests.ground.waiting import wait_until

pytestmark = [pytest.mark.apiserver, pytest.mark.mqtt]

A, B = "2001:db8:a::/64", "2001:db8:b::/64"
ADVERTS = ("cilium.io", "v2", "ciliumbgpadvertisements")
SUBNET = {
    "name": "svc",
    "offset": 1,
    "prefixLength": 112,
    "bgp": {"advertise": True, "community": "65000:100"},
}


def adverts(kube: KubeAPI) -> dict[str, dict[str, Any]]:
    items = k8s.CustomObjectsApi(kube.admin()).list_cluster_custom_object(*ADVERTS)["items"]
    return {o["metadata"]["name"]: o for o in items}


def entries(kube: KubeAPI, name: str = "home-svc") -> list[dict[str, Any]] | None:
    got = adverts(kube).get(name)
    return None if got is None else list(got["spec"]["advertisements"])


def service_advert(selector: dict[str, Any], community: str) -> dict[str, Any]:
    return {
        "advertisementType": "Service",
        "service": {"addresses": ["LoadBalancerIP"]},
        "selector": selector,
        "attributes": {"communities": {"standard": [community]}},
    }


def patch_subnets(kube: KubeAPI, subnets: list[dict[str, Any]]) -> None:
    k8s.CustomObjectsApi(kube.admin()).patch_cluster_custom_object(
        "dynamic-prefix.io", "v1alpha1", "dynamicprefixes", "home", {"spec": {"subnets": subnets}}
    )


def subnet_pool(kube: KubeAPI, selector: dict[str, Any]) -> None:
    k8s.CustomObjectsApi(kube.admin()).create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "svc-pool", "annotations": {
            "dynamic-prefix.io/name": "home", "dynamic-prefix.io/subnet": "svc"}},
        "spec": {"blocks": [], "serviceSelector": selector},
    })  # fmt: skip


def test_advertisements_follow_the_subnets(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    custom = k8s.CustomObjectsApi(cluster.admin())
    create_dp(cluster, router=router, subnets=[SUBNET])
    selector = {"matchLabels": {"bgp": "yes"}}
    subnet_pool(cluster, selector)
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))

    wait_until(lambda: entries(cluster) == [service_advert(selector, "65000:100")], what="advert created")
    advert, dp = adverts(cluster)["home-svc"], get_dp(cluster)
    assert advert["metadata"]["labels"] == {
        "dynamic-prefix.io/name": "home", "dynamic-prefix.io/subnet": "svc",
        "app.kubernetes.io/managed-by": "dynamic-prefix"}  # fmt: skip
    [owner] = advert["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("DynamicPrefix", "home", dp["metadata"]["uid"])
    wait_until(lambda: {"kind": "CiliumBGPAdvertisement", "apiVersion": "cilium.io/v2", "name": "home-svc",
                        "synced": True} in get_dp(cluster)["status"].get("targets", []),
               what="status.targets lists the advertisement")  # fmt: skip

    # A renumbering moves the pool's block; the advertisement selects Services, so it is not written.
    rv = advert["metadata"]["resourceVersion"]
    send(mosquitto, state(router, "br-lan", 2, prefix(B), prefix(A, "withdrawn", valid=7200)))
    wait_until(lambda: len(custom.get_cluster_custom_object(
        "cilium.io", "v2", "ciliumloadbalancerippools", "svc-pool")["spec"]["blocks"]) == 2,
        what="the pool holds B's and A's subnet")  # fmt: skip
    assert adverts(cluster)["home-svc"]["metadata"]["resourceVersion"] == rv

    # A new community and a new pool selector are written.
    patch_subnets(cluster, [{**SUBNET, "bgp": {"advertise": True, "community": "65000:200"}}])
    wait_until(lambda: entries(cluster) == [service_advert(selector, "65000:200")], what="community updated")
    selector = {"matchLabels": {"bgp": "v2"}}
    custom.patch_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", "svc-pool",
                                       {"spec": {"serviceSelector": selector}})  # fmt: skip
    wait_until(lambda: entries(cluster) == [service_advert(selector, "65000:200")], what="selector updated")

    # Advertising turned off: the advertisement goes, and with it its line in the status.
    patch_subnets(cluster, [{**SUBNET, "bgp": {"advertise": False}}])
    wait_until(lambda: "home-svc" not in adverts(cluster), what="advert deleted")
    wait_until(lambda: all(t["kind"] != "CiliumBGPAdvertisement"
                           for t in get_dp(cluster)["status"].get("targets", [])), what="status.targets")  # fmt: skip

    # On again, then the subnet removed: created, then deleted.
    patch_subnets(cluster, [SUBNET])
    wait_until(
        lambda: entries(cluster) == [service_advert(selector, "65000:100")], what="advert created again"
    )
    patch_subnets(cluster, [])
    wait_until(lambda: "home-svc" not in adverts(cluster), what="advert deleted with its subnet")


def test_a_subnet_no_pool_takes_advertises_nothing_and_says_why(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router, subnets=[SUBNET])
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(lambda: entries(cluster) == [], what="an advertisement that advertises nothing")

    def listed() -> dict[str, Any] | None:
        targets = get_dp(cluster).get("status", {}).get("targets", [])
        return next((t for t in targets if t["name"] == "home-svc"), None)

    wait_until(lambda: (t := listed()) is not None and not t["synced"], what="the problem in status.targets")
    assert "no CiliumLoadBalancerIPPool takes it" in (listed() or {})["problem"]


def test_without_the_bgp_crd_the_pools_still_sync_and_the_condition_says_what_is_missing(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    delete_crd(cluster, "ciliumbgpadvertisements.cilium.io")
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router, subnets=[SUBNET])
    subnet_pool(cluster, {"matchLabels": {"bgp": "yes"}})
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(lambda: get_pool(cluster, "svc-pool")["spec"]["blocks"] == [{"cidr": "2001:db8:a::1:0/112"}],
               what="the pool follows the prefix")  # fmt: skip

    def pools_synced() -> dict[str, Any]:
        got = (c for c in get_dp(cluster)["status"]["conditions"] if c["type"] == "PoolsSynced")
        return next(got, {"status": "", "message": ""})  # set by the pass's second half

    wait_until(lambda: "CiliumBGPAdvertisement: its CRD is not served" in pools_synced()["message"],
               what="PoolsSynced names the missing CRD")  # fmt: skip
    apply_crds(
        cluster, [c for c in crds.cilium() if c["metadata"]["name"] == "ciliumbgpadvertisements.cilium.io"]
    )
    wait_until(lambda: entries(cluster) is not None, what="advert created once the CRD is served")
    wait_until(lambda: pools_synced()["status"] == "True", what="PoolsSynced")


async def test_a_create_answered_404_is_retried_not_taken_as_done(cluster: KubeAPI) -> None:
    """Right after its CRD appears a kind may not be served yet: the create's 404 is not "done".

    Driven in-process at the write, against the real API server with the CRD deleted, so the
    404 is the API server's own; clusterd once took it as success and never created the object.
    """
    from clusterd.adapters.kube import ApiError, Kube
    from clusterd.controller.cache import Cache
    from clusterd.controller.writes import Writer, permanent
    from clusterd.metrics import Metrics
    from clusterd.targets import TARGETS, bgp_advertisement
    from clusterd.targets.base import Create

    delete_crd(cluster, "ciliumbgpadvertisements.cilium.io")
    cache = Cache(TARGETS)
    cache.served[bgp_advertisement.TARGET.kind] = "v2"  # as clusterd believes a moment after the CRD event
    kube = Kube(cluster.admin())
    writer = Writer(kube, cache, Metrics(), lambda key: None)
    writer.leader = True
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumBGPAdvertisement",
            "metadata": {"name": "home-svc"}, "spec": {"advertisements": []}}  # fmt: skip
    try:
        with pytest.raises(ApiError) as raised:
            await writer.patch(bgp_advertisement.TARGET, body, Create(body))
    finally:
        kube.close()
    assert not permanent(raised.value), raised.value  # retried with backoff until the kind is served
