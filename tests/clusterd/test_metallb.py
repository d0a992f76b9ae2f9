"""MetalLB's IPAddressPool kept in step by clusterd, on the real MetalLB controller.

clusterd writes the pool's ``spec.addresses`` (``start-end`` for the address
range); MetalLB's controller allocates from it and writes every Service's
``status.loadBalancer.ingress``, which a watch records (tests/ground/lbipam.py).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from ipaddress import IPv6Network
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from clusterd.core import companions
from tests.clusterd.conftest import NS
from tests.clusterd.test_clusterd import RANGE, block, condition, create_dp, events_for, get_dp
from tests.clusterd.test_ha_services import (
    HA,
    MLB,
    SIMPLE,
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


def test_on_metallb_a_companion_keeps_the_old_address_until_it_expires_and_the_service_moves(
    cluster: KubeAPI, metallb_ingress: IngressLog, ha: Any, record_property: Any
) -> None:
    """HA on MetalLB, which holds one address per family: A -> B -> A -> B's expiry.

    At each renumbering the Service moves to the new prefix at the same host offset (DNS with it)
    and a companion Service takes the old address once MetalLB has let go of it, never asking for
    an address another Service holds (MetalLB would refuse it and not try again). The companion is
    owned by the Service and deleted when its prefix becomes current again or expires.
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
    core = k8s.CoreV1Api(cluster.admin())
    web = core.read_namespaced_service("web", NS)
    on_a, on_b = companions.name("web", IPv6Network(A)), companions.name("web", IPv6Network(B))

    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    b = at(B, a)
    metallb_ingress.wait("web", lambda ips: ips == (b,), "web on its B address alone")
    metallb_ingress.wait(on_a, lambda ips: ips == (a,), "the companion on web's A address")
    wait_annotations(cluster, "web", b, b, key=MLB)
    gap = metallb_ingress.first_seen(on_a, a) - metallb_ingress.first_seen("web", b)
    record_property("metallb_handover_gap_s", round(gap, 3))
    companion = core.read_namespaced_service(on_a, NS)
    assert [(r.kind, r.name, r.uid) for r in companion.metadata.owner_references] == [
        ("Service", "web", web.metadata.uid)
    ]
    assert companion.spec.selector == web.spec.selector
    assert [(p.port, p.protocol) for p in companion.spec.ports] == [
        (p.port, p.protocol) for p in web.spec.ports
    ]
    assert "external-dns.alpha.kubernetes.io/target" not in (companion.metadata.annotations or {})
    assert metallb_ingress.history(on_a) == [(a,)] and metallb_ingress.history("web") == [(a,), (b,)]
    wait_until(lambda: condition(get_dp(cluster), "ServicesSynced")[0] == "True", what="Services in step")

    send(cd, 3, prefix(A), prefix(B, "deprecated", valid=7200))  # A comes back: the roles swap
    metallb_ingress.wait("web", lambda ips: ips == (a,), "web back on its A address")
    metallb_ingress.wait(on_b, lambda ips: ips == (b,), "a companion on web's B address")
    wait_until(lambda: on_a not in names(cluster), what="A's companion deleted")
    wait_annotations(cluster, "web", a, a, key=MLB)

    send(cd, 4, prefix(A), prefix(B, "withdrawn", valid=0))  # B's valid lifetime is over
    wait_until(lambda: on_b not in names(cluster), what="B's companion deleted at B's expiry")
    assert metallb_ingress.history("web") == [(a,), (b,), (a,)], "web moved other than with the prefix"
    assert metallb_ingress.history(on_b) == [(b,)]
    for name in ("web", on_a, on_b):
        assert "AllocationFailed" not in events_for(cluster, name), f"MetalLB refused {name} an address"


def names(kube: KubeAPI) -> set[str]:
    return {s.metadata.name for s in k8s.CoreV1Api(kube.admin()).list_namespaced_service(NS).items}


def test_killed_between_the_services_move_and_its_companion_the_next_clusterd_makes_the_companion(
    cluster: KubeAPI, metallb_ingress: IngressLog, clusterd_factory: Any
) -> None:
    """The state of a crash inside a hand-over on MetalLB: the Service moved to B, A's companion
    not made yet. clusterd runs as the chart's ServiceAccount without the right to create Services,
    so the companion's create is refused there; it is SIGKILLed, the right restored, and the next
    clusterd makes the companion from what it finds."""
    from tests.ground import testbin
    from tests.packaging.conftest import find, render
    from tests.packaging.test_rbac import apply_rbac

    docs = render(testbin.find("helm") or testbin.build("helm"), namespace="dynamic-prefix")
    rules = find(docs, "ClusterRole")["rules"]
    binding = find(docs, "ClusterRoleBinding")
    binding["metadata"].setdefault("labels", {})["dynamic-prefix.io/test"] = "true"  # clean_state deletes it
    cluster.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    token = cluster.service_account_token("dynamic-prefix", find(docs, "ServiceAccount")["metadata"]["name"])
    no_create = [{**r, "verbs": [v for v in r["verbs"] if v != "create"]} if r["resources"] == ["services"] else r
                 for r in rules]  # fmt: skip
    apply_rbac(cluster, no_create, [])

    create_dp(cluster, addressRanges=[RANGE], transition=HA)
    metallb_pool(cluster)
    first = clusterd_factory("first", token=token)
    first.wait_ready()
    send(first, 1, prefix(A))
    service(cluster, "web", {"dynamic-prefix.io/ip-annotation": "metallb"})
    (a,) = metallb_ingress.wait("web", one_address, "an A address from MetalLB")
    send(first, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    b, on_a = at(B, a), companions.name("web", IPv6Network(A))
    metallb_ingress.wait("web", lambda ips: ips == (b,), "web on its B address")
    wait_until(lambda: "WriteRefused" in events_for(cluster, "web"), what="the companion's create refused")
    assert on_a not in names(cluster)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()

    apply_rbac(cluster, rules, [])
    clusterd_factory("second", token=token).wait_ready()
    metallb_ingress.wait(on_a, lambda ips: ips == (a,), "the companion on web's A address")
    assert metallb_ingress.history("web") == [(a,), (b,)]
    assert "AllocationFailed" not in events_for(cluster, on_a)


def test_a_users_service_with_the_companions_name_is_reported_and_left_alone(
    cluster: KubeAPI, metallb_ingress: IngressLog, ha: Any
) -> None:
    create_dp(cluster, addressRanges=[RANGE], transition=HA)
    metallb_pool(cluster)
    cd = ha()
    send(cd, 1, prefix(A))
    service(cluster, "web", {"dynamic-prefix.io/ip-annotation": "metallb"})
    (a,) = metallb_ingress.wait("web", one_address, "an A address from MetalLB")
    core = k8s.CoreV1Api(cluster.admin())
    on_a = companions.name("web", IPv6Network(A))
    core.create_namespaced_service(NS, k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name=on_a),
        spec=k8s.V1ServiceSpec(ports=[k8s.V1ServicePort(port=80)]),
    ))  # fmt: skip
    mine = core.read_namespaced_service(on_a, NS).metadata.resource_version
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    metallb_ingress.wait("web", lambda ips: ips == (at(B, a),), "web on its B address")
    wait_until(lambda: "WriteRefused" in events_for(cluster, "web"), what="the name clash reported on web")
    assert "already exists" in json.dumps(get_dp(cluster)["status"]["conditions"])
    assert core.read_namespaced_service(on_a, NS).metadata.resource_version == mine
