"""The controller's pure pieces: which work each watch event makes, and the work queue's rules.

The cache's handlers return work keys, so they run here without an event loop
or an API server. What they must get right: a change clusterd does not read
(Cilium's counts in a pool's status, LB-IPAM's conditions on a Service) makes
no work, and a Service's change makes that Service's work only, never a pass
over its whole DynamicPrefix (docs/performance.md, "HA Services").
"""

from __future__ import annotations

import asyncio
import copy
from ipaddress import IPv6Address
from typing import Any

from clusterd.controller.cache import Cache
from clusterd.controller.keys import DynamicPrefixKey, ObjectKey
from clusterd.controller.queue import WorkQueue
from clusterd.targets import TARGETS, cilium_pool, services_ha

ANN = {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/address-range": "lb"}


def pool(rv: str, blocks: list[Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "p", "resourceVersion": rv, "annotations": dict(ANN)},
            "spec": {"blocks": blocks}, "status": status or {}}  # fmt: skip


def service(
    rv: str, ips: list[str], conditions: list[Any] | None = None, name: str = "web", **ann: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "apps",
            "name": name,
            "resourceVersion": rv,
            "annotations": {**ANN, **ann},
        },
        "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}, "conditions": conditions or []},
    }


def crd(plural: str, *versions: str) -> dict[str, Any]:
    return {"metadata": {"name": f"{plural}.cilium.io"},
            "spec": {"versions": [{"name": v, "served": True} for v in versions]}}  # fmt: skip


def test_a_pool_status_written_by_cilium_makes_no_work_its_spec_does() -> None:
    cache = Cache(TARGETS)
    on_pool = cache.on_object(cilium_pool.TARGET)
    assert on_pool("SYNC", [pool("1", [])]) == [DynamicPrefixKey("home")]
    counted = pool("2", [], {"conditions": [{"type": "cilium.io/PoolConflict", "status": "False"}]})
    assert on_pool("MODIFIED", counted) == []
    assert on_pool("MODIFIED", pool("3", [{"cidr": "192.0.2.0/24"}])) == [DynamicPrefixKey("home")]


def test_a_service_change_makes_only_that_services_work_and_only_when_clusterd_reads_it() -> None:
    cache = Cache(TARGETS)
    on_svc = cache.on_object(services_ha.TARGET)
    key = ObjectKey("Service", "apps", "web")
    assert on_svc("SYNC", [service("1", [])]) == [key]
    lbipam = [{"type": "cilium.io/IPAMRequestSatisfied", "status": "True"}]
    assert on_svc("MODIFIED", service("2", [], lbipam)) == [], "only a condition clusterd never reads changed"
    assert on_svc("MODIFIED", service("3", ["2001:db8:a::f000:0:0:1"], lbipam)) == [key]
    assert cache.all_taken() == {IPv6Address("2001:db8:a::f000:0:0:1")}
    same = copy.deepcopy(service("3", ["2001:db8:a::f000:0:0:1"], lbipam))
    assert on_svc("MODIFIED", same) == [], "the echo of clusterd's own write"


def test_two_services_claiming_one_address_are_both_planned_again() -> None:
    """clusterd's pick for one Service, given by LB-IPAM to another before it saw the request:
    only the other Service changed, yet the first must pick again."""
    cache = Cache(TARGETS)
    on_svc = cache.on_object(services_ha.TARGET)
    x = "2001:db8:a::f000:0:0:1"
    picked = service("1", [], name="pinned")
    picked["metadata"]["annotations"]["lbipam.cilium.io/ips"] = f"192.0.2.10,{x}"
    on_svc("SYNC", [picked, service("1", [], name="early")])
    pinned, early = ObjectKey("Service", "apps", "pinned"), ObjectKey("Service", "apps", "early")
    assert on_svc("MODIFIED", service("2", [x], name="early")) == [early, pinned]
    assert on_svc("MODIFIED", service("3", [x], name="early", conditions=[{"type": "x"}])) == []
    # The claim is dropped with the Service: a new one on the address shares it with nobody.
    on_svc("DELETED", picked)
    assert on_svc("MODIFIED", service("4", [], name="early")) == [early]
    assert on_svc("MODIFIED", service("5", [x], name="early")) == [early]
    assert cache.claims == {IPv6Address(x): {("Service", "apps", "early")}}
    # clusterd's own write that claims a held address says so too.
    again = service("1", [], name="pinned")
    on_svc("ADDED", again)
    got = copy.deepcopy(again)
    got["metadata"]["resourceVersion"] = "9"
    got["metadata"]["annotations"]["lbipam.cilium.io/ips"] = x
    assert cache.written("Service", again, got) == [early, pinned]


def test_a_service_that_stops_following_is_synced_once_more_then_forgotten() -> None:
    cache = Cache(TARGETS)
    on_svc = cache.on_object(services_ha.TARGET)
    on_svc("SYNC", [service("1", [])])
    plain = service("2", [])
    plain["metadata"]["annotations"] = {}
    key = ObjectKey("Service", "apps", "web")
    assert on_svc("MODIFIED", plain) == [key]  # its sync finds it gone: its problem and count go
    assert cache.get(key) is None


def test_served_versions_come_from_the_crds_and_prefer_v2() -> None:
    cache = Cache(TARGETS)
    cache.on_dp("SYNC", [{"metadata": {"name": "home", "resourceVersion": "1"}, "spec": {}}])
    keys = cache.on_crd("SYNC", [crd("ciliumloadbalancerippools", "v2alpha1", "v2"),
                                 crd("ciliumcidrgroups", "v2alpha1")])  # fmt: skip
    assert keys == [DynamicPrefixKey("home")]
    assert cache.served == {"Service": "v1", "NetworkPolicy": "v1", "CiliumLoadBalancerIPPool": "v2",
                            "CiliumCIDRGroup": "v2alpha1"}  # fmt: skip
    assert cache.lists_pending() == [
        "CiliumCIDRGroup",
        "CiliumLoadBalancerIPPool",
        "NetworkPolicy",
        "Service",
    ]
    assert cache.on_crd("DELETED", crd("ciliumcidrgroups", "v2alpha1")) == [DynamicPrefixKey("home")]
    assert "CiliumCIDRGroup" not in cache.served


async def test_the_queue_deduplicates_requeues_dirty_keys_and_backs_off_per_key() -> None:
    q: WorkQueue[str] = WorkQueue(base=0.01, cap=1.0)
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    q.add("a")  # changed while being processed: not handed out twice at once
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")
    assert len(q) == 1 and await q.get() == "a"
    delays = [q.retry("a") for _ in range(4)]
    assert all(0.5 * 0.01 * 2**n <= d <= 0.01 * 2**n for n, d in enumerate(delays)), delays
    assert q.failures("a") == 4
    q.done("a")
    await asyncio.sleep(0.2)
    assert await asyncio.wait_for(q.get(), 1) == "a"  # the retry timer added it back, once
    q.forget("a")
    assert q.failures("a") == 0


def test_a_holder_that_leaves_its_dynamic_prefix_makes_that_prefixs_pass() -> None:
    """A Calico parent unannotated or deleted: its DynamicPrefix's pass runs, so the pools made from it
    are disabled at once (they follow the parent), not at the next report."""
    from clusterd.targets import calico_pool

    cache = Cache(TARGETS)
    on_pool = cache.on_object(calico_pool.TARGET)
    parent = {"metadata": {"name": "lb", "resourceVersion": "1", "annotations": dict(ANN)}, "spec": {}}
    assert on_pool("SYNC", [parent]) == [DynamicPrefixKey("home")]
    left = copy.deepcopy(parent)
    left["metadata"].update(resourceVersion="2", annotations={})
    assert on_pool("MODIFIED", left) == [DynamicPrefixKey("home")]
    assert on_pool("MODIFIED", parent | {"metadata": {**parent["metadata"], "resourceVersion": "3"}}) == [
        DynamicPrefixKey("home")
    ]
    assert on_pool("DELETED", parent) == [DynamicPrefixKey("home")]


def test_calico_pools_go_through_calicos_api_server_while_its_apiservice_is_available() -> None:
    cache = Cache(TARGETS)
    calico = {"metadata": {"name": "ippools.crd.projectcalico.org"},
              "spec": {"versions": [{"name": "v1", "served": True}]}}  # fmt: skip
    cache.on_crd("SYNC", [calico])
    assert not cache.crds_synced, "which versions are served is known only with the APIServices listed"

    def apiservice(available: str) -> dict[str, Any]:
        return {"metadata": {"name": "v3.projectcalico.org"},
                "status": {"conditions": [{"type": "Available", "status": available}]}}  # fmt: skip

    cache.on_apiservice("SYNC", [apiservice("False")])  # Calico's API server installed, not up yet
    assert cache.crds_synced and cache.served["IPPool"] == "v1"
    cache.on_apiservice("MODIFIED", apiservice("True"))
    assert cache.served["IPPool"] == "v3"
    cache.on_apiservice("DELETED", apiservice("True"))
    assert cache.served["IPPool"] == "v1"
