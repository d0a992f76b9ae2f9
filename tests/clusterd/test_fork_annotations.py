"""The Go operator fork's annotations (PKizzle/dynamic-prefix-operator), honoured (docs/migrating.md).

``dynamic-prefix.io/suffix`` pins a Service's host part like ``host-suffix``;
``skip-external-dns-update: "true"`` leaves its DNS target alone like
``manage-dns: "false"``; the fork's ownership records (``managed-ips``,
``managed-targets`` on Services, ``managed-blocks`` on pools,
``managed-cidrs`` on CIDR groups) say which entries the fork wrote: clusterd
takes them over as its own (so they go when their prefix expires, and a
user's entries stay) and replaces the record with its own on the first write.
"""

from __future__ import annotations

import json

from clusterd.core import pools
from clusterd.core import services as sv
from clusterd.targets import cidr_group, cilium_pool
from clusterd.targets.base import Context, Patch
from tests.clusterd.test_pools_lease_auth import SPEC as POOL_SPEC
from tests.clusterd.test_services_planner import SPEC, A, B, status, svc

V4 = {"cidr": "192.0.2.0/24"}


def test_the_forks_suffix_pins_the_host_part_like_host_suffix() -> None:
    p = sv.plan(
        svc({"dynamic-prefix.io/suffix": "::f000:0:0:10"}), SPEC, status((B, "active"), (A, "draining"))
    )
    assert p.annotations[sv.CILIUM_IPS] == "2001:db8:b:0:f000::10,2001:db8:a:0:f000::10"


def test_skip_external_dns_update_leaves_the_dns_target_alone() -> None:
    s = svc({"dynamic-prefix.io/skip-external-dns-update": "true"}, ips=("2001:db8:a:0:f000::1",))
    p = sv.plan(s, SPEC, status((A, "active")))
    assert sv.DNS_TARGET not in p.annotations and p.annotations[sv.CILIUM_IPS] == "2001:db8:a:0:f000::1"
    managed = sv.plan(svc({"dynamic-prefix.io/skip-external-dns-update": "false"}, ips=("2001:db8:a:0:f000::1",)),
                      SPEC, status((A, "active")))  # fmt: skip
    assert managed.annotations[sv.DNS_TARGET] == "2001:db8:a:0:f000::1"


def test_the_forks_service_records_are_taken_over_and_replaced() -> None:
    # The fork wrote A's address and left one of an expired prefix 9 behind; the user pinned their own.
    leaked, mine, users = "2001:db8:9:0:f000::5", "2001:db8:a:0:f000::5", "2001:db8:ffff::1"
    s = svc({sv.CILIUM_IPS: f"{mine},{leaked},{users}", sv.DNS_TARGET: f"{leaked},example.org",
             "dynamic-prefix.io/managed-ips": f"{mine},{leaked}",
             "dynamic-prefix.io/managed-targets": leaked}, ips=(mine,))  # fmt: skip
    p = sv.plan(s, SPEC, status((A, "active")))
    assert p.annotations[sv.CILIUM_IPS] == f"{mine},{users}"  # the fork's leftover goes, the user's stays
    assert p.annotations[sv.DNS_TARGET] == f"{mine},example.org"
    assert p.annotations["dynamic-prefix.io/managed-ips"] is None
    assert p.annotations["dynamic-prefix.io/managed-targets"] is None
    assert json.loads(p.annotations[sv.OWNED] or "")[sv.DNS_TARGET] == [mine]


def test_the_forks_pool_records_are_taken_over_and_replaced() -> None:
    old = {"start": "2001:db8:a:0:f000::", "stop": "2001:db8:a:0:ffff:ffff:ffff:ffff"}
    fork = {"dynamic-prefix.io/managed-blocks": "range=2001:db8:a:0:f000::-2001:db8:a:0:ffff:ffff:ffff:ffff,"
                                                "cidr=2001:db8:9::/64"}  # fmt: skip
    assert pools.owned(fork) == [old, {"cidr": "2001:db8:9::/64"}]
    obj = {"metadata": {"name": "p", "annotations": {pools.NAME: "home", pools.RANGE: "lb", **fork}},
           "spec": {"blocks": [V4, old]}}  # fmt: skip
    st = status(("2001:db8:b::/64", "active"))
    p = cilium_pool.TARGET.desired(POOL_SPEC, st, obj, Context(None))
    new = {"start": "2001:db8:b:0:f000::", "stop": "2001:db8:b:0:ffff:ffff:ffff:ffff"}
    assert isinstance(p.final, Patch)
    assert p.final.entries == [V4, new]  # the fork's block goes, the user's IPv4 block stays
    assert p.final.annotations["dynamic-prefix.io/managed-blocks"] is None
    assert json.loads(p.final.annotations[pools.MANAGED] or "") == [new]
    group = {"metadata": {"name": "g", "annotations": {pools.NAME: "home",
             "dynamic-prefix.io/managed-cidrs": "2001:db8:a::/64"}},
             "spec": {"externalCIDRs": ["198.51.100.0/24", "2001:db8:a::/64"]}}  # fmt: skip
    g = cidr_group.TARGET.desired(POOL_SPEC, st, group, Context(None))
    assert isinstance(g.final, Patch) and g.final.entries == ["198.51.100.0/24", "2001:db8:b::/64"]
    assert g.final.annotations["dynamic-prefix.io/managed-cidrs"] is None
