"""Calico IPPools on the real kube-apiserver: a pool per prefix, disabled while it drains, deleted at expiry.

The IPPool CRD carries CEL rules standing in for Calico's own validation
(tests/crds/calico.yaml: "IPPool CIDR cannot be modified", block sizes,
``allowedUses``), so a write Calico would refuse is refused here too. A watch
records every change to every IPPool: the test checks the exact writes of each
step, that no ``cidr`` is ever changed, and that the parent is never written.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch

from clusterd.targets.calico_pool import derived_name
from tests.clusterd.test_clusterd import condition, create_dp, events_for, get_dp, send
from tests.ground import crds
from tests.ground.apiserver import KubeAPI, apply_crds
from tests.ground.messages import prefix, state
from tests.ground.mosquitto import Mosquitto
from tests.ground.waiting import wait_until

pytestmark = [pytest.mark.apiserver, pytest.mark.mqtt]

ROOT = Path(__file__).resolve().parents[2]
G, V, P = "crd.projectcalico.org", "v1", "ippools"
A, B = "2001:db8:a::/64", "2001:db8:b::/64"
A_LB, B_LB = "2001:db8:a:0:f000::/68", "2001:db8:b:0:f000::/68"  # the range "lb" in each prefix
POOL_A, POOL_B = derived_name("lb", A_LB), derived_name("lb", B_LB)
TEMPLATE = {"cidr": "fd00:0:0:ffff::/120", "disabled": True, "allowedUses": ["LoadBalancer"], "blockSize": 122,
            "natOutgoing": False, "nodeSelector": "all()", "vxlanMode": "Never", "disableBGPExport": True}  # fmt: skip


class PoolLog:
    """Every ADDED/MODIFIED/DELETED of every IPPool, in order, as (type, name, spec)."""

    def __init__(self, kube: KubeAPI, since: str) -> None:
        self.api = k8s.CustomObjectsApi(kube.admin())
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(since,), daemon=True)
        self._thread.start()

    def _run(self, since: str) -> None:
        # stop() ends the stream; a watch that died early shows as writes that never come.
        with contextlib.suppress(Exception):
            for ev in self._watch.stream(
                self.api.list_cluster_custom_object, G, V, P, resource_version=since
            ):
                o = ev["object"]
                with self._lock:
                    self.events.append((ev["type"], o["metadata"]["name"], o.get("spec") or {}))

    def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The events since the last take."""
        with self._lock:
            out, self.events[:] = list(self.events), []
        return out

    def stop(self) -> None:
        self._watch.stop()


def create_parent(kube: KubeAPI, name: str = "lb", **spec: Any) -> dict[str, Any]:
    return dict(k8s.CustomObjectsApi(kube.admin()).create_cluster_custom_object(G, V, P, {
        "apiVersion": f"{G}/{V}", "kind": "IPPool",
        "metadata": {"name": name, "annotations": {"dynamic-prefix.io/name": "home",
                                                    "dynamic-prefix.io/address-range": "lb"}},
        "spec": {**TEMPLATE, **spec},
    }))  # fmt: skip


def pool(kube: KubeAPI, name: str) -> dict[str, Any] | None:
    try:
        return dict(k8s.CustomObjectsApi(kube.admin()).get_cluster_custom_object(G, V, P, name))
    except k8s.ApiException as e:
        if e.status == 404:
            return None
        raise


def disabled(kube: KubeAPI, name: str) -> bool | None:
    got = pool(kube, name)
    return None if got is None else bool(got["spec"].get("disabled"))


def settle(log: PoolLog, want: list[tuple[str, str]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Wait for the step's writes, then a little longer: exactly ``want`` (type, name), in any order."""
    wait_until(lambda: len(log.events) >= len(want), what=f"the writes {want}")
    time.sleep(1.0)
    got = log.take()
    assert sorted((t, n) for t, n, _ in got) == sorted(want), got
    return got


@pytest.fixture(params=["crd.projectcalico.org/v1", "projectcalico.org/v3"])
def calico_api(request: Any, cluster: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way Calico serves pools: its CRD alone, or its API server too (a stand-in, see
    tests/ground/crds.py); this module's helpers then read and write through that API."""
    if request.param.endswith("v3"):
        apply_crds(cluster, [crds.calico_v3()])
        group, version = request.param.split("/")
        monkeypatch.setattr(sys.modules[__name__], "G", group)
        monkeypatch.setattr(sys.modules[__name__], "V", version)
    return str(request.param)


def test_a_b_a_expiry_pools_are_made_disabled_enabled_and_deleted_never_a_cidr_edit(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str, calico_api: str
) -> None:
    """On each API Calico serves pools through: v3 (its API server) when it runs, else the CRD."""
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    parent = create_parent(cluster)
    log = PoolLog(cluster, parent["metadata"]["resourceVersion"])
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    cidrs: dict[str, str] = {}
    try:
        # A: one pool for A's range, the parent's spec copied, enabled.
        send(mosquitto, state(router, "br-lan", 1, prefix(A)))
        for _, name, spec in settle(log, [("ADDED", POOL_A)]):
            cidrs[name] = spec["cidr"]
        made = pool(cluster, POOL_A)
        assert made is not None
        assert made["spec"] == {**TEMPLATE, "cidr": A_LB, "disabled": False}
        assert made["metadata"]["labels"] == {
            "dynamic-prefix.io/name": "home",
            "dynamic-prefix.io/parent": "lb",
        }
        assert made["metadata"]["annotations"]["dynamic-prefix.io/prefix"] == A
        wait_until(
            lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced"), what="PoolsSynced"
        )
        assert calico_api in " ".join(
            e.message for e in k8s.CoreV1Api(cluster.admin()).list_event_for_all_namespaces().items
            if e.involved_object.name == POOL_A)  # fmt: skip
        (shown,) = [t for t in get_dp(cluster)["status"]["targets"] if t["name"] == POOL_A]
        assert shown["apiVersion"] == calico_api
        if calico_api.endswith("v3"):  # nothing through the CRD behind Calico's back
            v1 = k8s.CustomObjectsApi(cluster.admin()).list_cluster_custom_object(
                "crd.projectcalico.org", "v1", P
            )
            assert v1["items"] == []

        # A -> B: B's pool created, A's disabled (its cidr untouched).
        send(mosquitto, state(router, "br-lan", 2, prefix(B), prefix(A, "withdrawn", valid=7200)))
        for _, name, spec in settle(log, [("ADDED", POOL_B), ("MODIFIED", POOL_A)]):
            assert cidrs.setdefault(name, spec["cidr"]) == spec["cidr"]
        assert (disabled(cluster, POOL_A), disabled(cluster, POOL_B)) == (True, False)

        # The same message again: nothing written.
        done = cd.metric("dynamic_prefix_reconcile_duration_seconds_count")
        send(mosquitto, state(router, "br-lan", 3, prefix(B), prefix(A, "withdrawn", valid=7200)))
        wait_until(lambda: cd.metric("dynamic_prefix_reconcile_duration_seconds_count") > done, what="a pass")
        time.sleep(1.0)
        assert log.take() == []

        # B -> A: A's pool enabled again (no new pool, no cidr edit), B's disabled.
        send(mosquitto, state(router, "br-lan", 4, prefix(A), prefix(B, "withdrawn", valid=7200)))
        for _, name, spec in settle(log, [("MODIFIED", POOL_A), ("MODIFIED", POOL_B)]):
            assert cidrs[name] == spec["cidr"]
        assert (disabled(cluster, POOL_A), disabled(cluster, POOL_B)) == (False, True)

        # B expires: its pool is deleted.
        send(mosquitto, state(router, "br-lan", 5, prefix(A), prefix(B, "withdrawn", valid=0)))
        settle(log, [("DELETED", POOL_B)])
        assert pool(cluster, POOL_B) is None
        assert disabled(cluster, POOL_A) is False
        # The parent was never written: the watch saw no event of it until now.
        after = pool(cluster, "lb")
        assert after is not None
        assert after["metadata"]["resourceVersion"] == parent["metadata"]["resourceVersion"]

        # The user takes the parent's annotation away: A's pool is disabled at once, with no new message.
        k8s.CustomObjectsApi(cluster.admin()).patch_cluster_custom_object(
            G, V, P, "lb", {"metadata": {"annotations": {"dynamic-prefix.io/name": None}}}
        )
        settle(log, [("MODIFIED", "lb"), ("MODIFIED", POOL_A)])
        assert disabled(cluster, POOL_A) is True
    finally:
        log.stop()


def test_the_stand_in_rules_refuse_a_cidr_edit_and_a_pool_too_small_for_its_blocks(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    """What Calico would refuse is refused: an in-place cidr edit, and a derived pool smaller than a block."""
    api = k8s.CustomObjectsApi(cluster.admin())
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router, addressRanges=[
        {"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"},
        {"name": "one", "start": "::1:0", "end": "::1:ff"}])  # fmt: skip
    create_parent(cluster)
    small = create_parent(cluster, "tiny", cidr="fd00:0:0:fffe::/116", blockSize=116)
    api.patch_cluster_custom_object(G, V, P, "tiny", {"metadata": {"annotations": {
        "dynamic-prefix.io/address-range": "one"}}})  # a /120, smaller than one /116 block  # fmt: skip
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(lambda: pool(cluster, POOL_A) is not None, what="A's pool")

    with pytest.raises(k8s.ApiException) as refused:
        api.patch_cluster_custom_object(G, V, P, POOL_A, {"spec": {"cidr": B_LB}})
    assert refused.value.status == 422
    assert "IPPool CIDR cannot be modified" in str(refused.value.body)
    with pytest.raises(k8s.ApiException) as refused:
        api.patch_cluster_custom_object(G, V, P, POOL_A, {"spec": {"blockSize": 124}})
    assert "IPPool BlockSize cannot be modified" in str(refused.value.body)

    # The derived pool Calico would refuse is shown on the parent and the DynamicPrefix, not retried.
    wait_until(lambda: "WriteRefused" in events_for(cluster, "tiny"), what="WriteRefused on the parent")
    wait_until(lambda: condition(get_dp(cluster), "PoolsSynced") == ("False", "PoolProblems"),
               what="PoolsSynced False")  # fmt: skip
    assert "at least as big as one block" in str(get_dp(cluster)["status"]["conditions"])
    tiny = pool(cluster, "tiny")
    assert tiny is not None and tiny["spec"] == small["spec"]  # the parent itself is never written
    assert pool(cluster, derived_name("tiny", "2001:db8:a::1:0/120")) is None


def test_killed_between_creating_the_new_pool_and_disabling_the_old_one_the_next_clusterd_finishes(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    """The state of a crash between the two writes of A->B (B's pool made, A's not disabled yet).

    clusterd runs as the chart's ServiceAccount without the right to patch IPPools, so on A->B it
    creates B's pool and cannot disable A's: both are enabled (safe: A is still valid). It is
    SIGKILLed there, the right restored, and a new clusterd finishes: A's pool disabled, B's not
    made twice, no cidr changed.
    """
    from tests.ground import testbin
    from tests.packaging.conftest import find, render
    from tests.packaging.test_rbac import apply_rbac

    docs = render(testbin.find("helm") or testbin.build("helm"), namespace="dynamic-prefix")
    rules = find(docs, "ClusterRole")["rules"]
    binding = find(docs, "ClusterRoleBinding")
    binding["metadata"].setdefault("labels", {})["dynamic-prefix.io/test"] = "true"
    cluster.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    token = cluster.service_account_token("dynamic-prefix", find(docs, "ServiceAccount")["metadata"]["name"])
    no_patch = [{**r, "verbs": [v for v in r["verbs"] if v != "patch"]} if "ippools" in r["resources"] else r
                for r in rules]  # fmt: skip
    apply_rbac(cluster, no_patch, [])

    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    parent = create_parent(cluster)
    first = clusterd_factory("first", mqtt_port=mosquitto.plain_port, token=token)
    first.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(lambda: disabled(cluster, POOL_A) is False, what="A's pool")
    send(mosquitto, state(router, "br-lan", 2, prefix(B), prefix(A, "withdrawn", valid=7200)))
    wait_until(lambda: "WriteRefused" in events_for(cluster, POOL_A), what="A's disable refused")
    assert (disabled(cluster, POOL_A), disabled(cluster, POOL_B)) == (False, False)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()

    made_b = pool(cluster, POOL_B)
    assert made_b is not None
    log = PoolLog(cluster, made_b["metadata"]["resourceVersion"])
    try:
        apply_rbac(cluster, rules, [])
        clusterd_factory("second", mqtt_port=mosquitto.plain_port, token=token).wait_ready()
        got = settle(log, [("MODIFIED", POOL_A)])
        assert got[0][2]["cidr"] == A_LB and got[0][2]["disabled"] is True
    finally:
        log.stop()
    assert (disabled(cluster, POOL_A), disabled(cluster, POOL_B)) == (True, False)
    after = pool(cluster, "lb")
    assert after is not None and after["metadata"]["resourceVersion"] == parent["metadata"]["resourceVersion"]


def test_the_example_in_docs_calico_md_gives_the_pool_it_shows(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    """docs/calico.md's DynamicPrefix and parent, applied as they are (router id aside), give its pool."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", (ROOT / "docs" / "calico.md").read_text(), re.M | re.S)
    router = mqtt_base.rsplit("/", 1)[1]
    dp, parent = yaml.safe_load_all(blocks[0])
    dp["spec"]["acquisition"]["routerd"]["router"] = router
    shown = yaml.safe_load(blocks[1])
    api = k8s.CustomObjectsApi(cluster.admin())
    api.create_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", dp)
    api.create_cluster_custom_object(G, V, P, parent)
    clusterd_factory(mqtt_port=mosquitto.plain_port).wait_ready()
    send(
        mosquitto,
        state(router, "br-lan", 1, prefix(shown["metadata"]["annotations"]["dynamic-prefix.io/prefix"])),
    )
    name = derived_name(parent["metadata"]["name"], shown["spec"]["cidr"])
    wait_until(lambda: pool(cluster, name) is not None, what=f"the pool {name}")
    made = pool(cluster, name)
    assert made is not None
    assert shown["metadata"]["name"] == f"{parent['metadata']['name']}-<hash>"
    assert made["spec"] == shown["spec"]
    assert made["metadata"]["labels"] == shown["metadata"]["labels"]
    assert made["metadata"]["annotations"] == shown["metadata"]["annotations"]


def test_without_the_right_to_list_apiservices_clusterd_runs_through_calicos_crd_and_says_why(
    cluster: KubeAPI, clusterd_factory: Any
) -> None:
    """An older chart's ClusterRole (no apiservices): clusterd still starts and keeps pools, through
    Calico's CRD, instead of waiting forever for a list it may not read."""
    from tests.clusterd.test_clusterd import RANGE, V4, block, create_pool, get_pool
    from tests.clusterd.test_ha_services import send as post
    from tests.ground import testbin
    from tests.packaging.conftest import find, render
    from tests.packaging.test_rbac import apply_rbac

    docs = render(testbin.find("helm") or testbin.build("helm"), namespace="dynamic-prefix")
    binding = find(docs, "ClusterRoleBinding")
    binding["metadata"].setdefault("labels", {})["dynamic-prefix.io/test"] = "true"
    cluster.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    token = cluster.service_account_token("dynamic-prefix", find(docs, "ServiceAccount")["metadata"]["name"])
    apply_rbac(
        cluster, [r for r in find(docs, "ClusterRole")["rules"] if r["resources"] != ["apiservices"]], []
    )
    apply_crds(cluster, [crds.calico_v3()])  # served, but clusterd cannot know

    create_dp(cluster, router="edge", addressRanges=[RANGE])
    create_pool(cluster, "lb-pool", [V4])
    create_parent(cluster)
    cd = clusterd_factory(token=token)
    cd.wait_ready()
    post(cd, 1, prefix(A))
    wait_until(
        lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(A)], what="the Cilium pool"
    )
    wait_until(lambda: pool(cluster, POOL_A) is not None, what="A's Calico pool, through the CRD")
    assert "apiservices.apiregistration.k8s.io" in cd.log()
