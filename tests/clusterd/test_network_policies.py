"""NetworkPolicies follow the prefix on the real apiserver: clusterd's ipBlock peers, the user's untouched.

Every version of the policy is replayed from etcd's history (a watch from the
resourceVersion before a step), so "one write per change" counts real writes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from tests.clusterd.test_clusterd import condition, create_dp, events_for, get_dp
from tests.clusterd.test_ha_services import HA, send
from tests.ground.apiserver import KubeAPI
from tests.ground.messages import prefix
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.apiserver

NS = "policies"
A, B = "2001:db8:a::/64", "2001:db8:b::/64"
USER_BLOCK = {"ipBlock": {"cidr": "2001:db8:ffff::/48", "except": ["2001:db8:ffff:1::/64"]}}
PODS = {"podSelector": {"matchLabels": {"app": "probe"}}}
PORTS = [{"protocol": "TCP", "port": 443}]


def ip(cidr: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr}}


def api(kube: KubeAPI) -> k8s.NetworkingV1Api:
    return k8s.NetworkingV1Api(kube.admin())


def create_policy(kube: KubeAPI, name: str, ingress: list[Any], **ann: str) -> None:
    api(kube).create_namespaced_network_policy(NS, {
        "metadata": {"name": name, "annotations": {"dynamic-prefix.io/name": "home", **ann}},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"], "ingress": ingress},
    })  # fmt: skip


def get_policy(kube: KubeAPI, name: str) -> dict[str, Any]:
    got: dict[str, Any] = api(kube).read_namespaced_network_policy(name, NS, _preload_content=False).json()
    return got


def peers(kube: KubeAPI, name: str) -> list[Any]:
    return list(get_policy(kube, name)["spec"]["ingress"][0].get("from") or [])


def versions_since(kube: KubeAPI, name: str, since: str) -> list[list[Any]]:
    """The ingress peers of each version of the policy written after resourceVersion ``since``."""
    out = []
    w = watch.Watch()
    for ev in w.stream(
        api(kube).list_namespaced_network_policy, NS, resource_version=since, timeout_seconds=2
    ):
        obj = ev["raw_object"]
        if obj["metadata"]["name"] == name:
            out.append(obj["spec"]["ingress"][0].get("from") or [])
    return out


@pytest.fixture
def namespace(cluster: KubeAPI) -> None:
    k8s.CoreV1Api(cluster.admin()).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))


@pytest.mark.usefixtures("namespace")
def test_a_policy_follows_a_then_a_and_b_then_b_with_one_write_each_and_user_peers_untouched(
    cluster: KubeAPI, ha: Any
) -> None:
    create_dp(cluster, transition=HA)
    create_policy(cluster, "from-lan", [{"from": [USER_BLOCK, PODS], "ports": PORTS}, {"ports": PORTS}])
    before = get_policy(cluster, "from-lan")["metadata"]["resourceVersion"]
    cd = ha()
    send(cd, 1, prefix(A))
    wait_until(lambda: peers(cluster, "from-lan") == [USER_BLOCK, PODS, ip(A)], what="A added")
    assert versions_since(cluster, "from-lan", before) == [[USER_BLOCK, PODS, ip(A)]]
    policy = get_policy(cluster, "from-lan")
    assert policy["spec"]["ingress"][1] == {"ports": PORTS}  # a rule without peers admits everyone: untouched
    assert json.loads(policy["metadata"]["annotations"]["dynamic-prefix.io/managed"]) == [A]

    before = policy["metadata"]["resourceVersion"]
    send(cd, 2, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_until(lambda: peers(cluster, "from-lan") == [USER_BLOCK, PODS, ip(A), ip(B)], what="B added, A kept")
    # A repeated message, then A expires: the replay holds exactly the one write A's expiry made.
    repeated = get_policy(cluster, "from-lan")["metadata"]["resourceVersion"]
    send(cd, 3, prefix(B), prefix(A, "deprecated", valid=7200))
    send(cd, 4, prefix(B), prefix(A, "withdrawn", valid=0))
    wait_until(lambda: peers(cluster, "from-lan") == [USER_BLOCK, PODS, ip(B)], what="A removed")
    assert versions_since(cluster, "from-lan", before) == [
        [USER_BLOCK, PODS, ip(A), ip(B)],
        [USER_BLOCK, PODS, ip(B)],
    ]
    assert versions_since(cluster, "from-lan", repeated) == [[USER_BLOCK, PODS, ip(B)]]
    wait_until(lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced"), what="PoolsSynced")

    # Release: only clusterd's peer and its record go.
    api(cluster).patch_namespaced_network_policy(
        "from-lan", NS, {"metadata": {"annotations": {"dynamic-prefix.io/name": None}}}
    )
    wait_until(lambda: peers(cluster, "from-lan") == [USER_BLOCK, PODS], what="clusterd's peer taken back")
    assert "dynamic-prefix.io/managed" not in (
        get_policy(cluster, "from-lan")["metadata"].get("annotations") or {}
    )


@pytest.mark.usefixtures("namespace")
def test_an_invalid_policy_is_an_event_and_a_condition_and_is_left_alone(cluster: KubeAPI, ha: Any) -> None:
    create_dp(cluster, transition=HA)
    create_policy(cluster, "no-peers", [{"ports": PORTS}])
    create_policy(cluster, "typo", [{"from": [PODS]}], **{"dynamic-prefix.io/address-range": "nope"})
    untouched = {n: get_policy(cluster, n)["metadata"]["resourceVersion"] for n in ("no-peers", "typo")}
    cd = ha()
    send(cd, 1, prefix(A))
    wait_until(
        lambda: condition(get_dp(cluster), "PoolsSynced") == ("False", "PoolProblems"), what="PoolProblems"
    )
    message = next(
        c["message"] for c in get_dp(cluster)["status"]["conditions"] if c["type"] == "PoolsSynced"
    )
    assert f"NetworkPolicy {NS}/no-peers: no ingress rule has a peer of its own" in message, message
    assert f"NetworkPolicy {NS}/typo: address range 'nope' is not in the DynamicPrefix" in message, message
    wait_until(lambda: "NotSynced" in events_for(cluster, "no-peers") and "NotSynced" in events_for(cluster, "typo"),
               what="an Event on each policy")  # fmt: skip
    evs = k8s.CoreV1Api(cluster.admin()).list_namespaced_event(NS).items
    assert {(e.involved_object.api_version, e.involved_object.kind) for e in evs} == {
        ("networking.k8s.io/v1", "NetworkPolicy")
    }
    # Announced once, not retried: another message brings no second Event and no write.
    send(cd, 2, prefix(A))
    send(cd, 3, prefix(B), prefix(A, "deprecated", valid=7200))
    wait_until(lambda: get_dp(cluster)["status"]["currentPrefix"] == B, what="B")
    assert {n: get_policy(cluster, n)["metadata"]["resourceVersion"] for n in untouched} == untouched
    assert events_for(cluster, "no-peers").count("NotSynced") == 1
