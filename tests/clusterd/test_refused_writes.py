"""A write the API server refuses is shown and not sent again in a loop (permanent vs temporary failures).

The refusal comes from the real kube-apiserver: a ValidatingAdmissionPolicy
whose CEL rule rejects updates of a labelled pool with 422 Invalid, as a
schema or CEL rule of the kind itself would.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.clusterd.test_clusterd import (
    V4,
    block,
    condition,
    create_dp,
    events_for,
    get_dp,
    get_pool,
    send,
)
from tests.ground.apiserver import KubeAPI
from tests.ground.messages import prefix, state
from tests.ground.mosquitto import Mosquitto
from tests.ground.waiting import wait_until

pytestmark = [pytest.mark.apiserver, pytest.mark.mqtt]

A = "2001:db8:a::/64"
POLICY = "dp-test-refuse-labelled-pools"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
WATCHED = 12.0
"""Seconds the refused write is watched for retries: the old retry loop (0.5, 1, 2, 4, 8 s) made 5 by then."""


def refuse_labelled_pools(kube: KubeAPI) -> None:
    """Pools labelled ``refuse`` cannot be updated (422), until the label is removed."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["cilium.io"], "apiVersions": ["*"], "operations": ["UPDATE"],
                "resources": ["ciliumloadbalancerippools"]}]},
            "validations": [{"expression": "!has(object.metadata.labels) || !('refuse' in object.metadata.labels)",
                             "message": "this pool is frozen by a test policy", "reason": "Invalid"}],
        },
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY}, "spec": {"policyName": POLICY, "validationActions": ["Deny"]},
    }  # fmt: skip
    for path, body in (
        ("validatingadmissionpolicies", policy),
        ("validatingadmissionpolicybindings", binding),
    ):
        code, resp = kube.request("POST", f"{ADMISSION}/{path}", body)
        assert code == 201, resp


def lift(kube: KubeAPI) -> None:
    for path in ("validatingadmissionpolicybindings", "validatingadmissionpolicies"):
        kube.request("DELETE", f"{ADMISSION}/{path}/{POLICY}")


def test_a_refused_pool_write_is_shown_and_not_retried_in_a_loop(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    custom = k8s.CustomObjectsApi(cluster.admin())
    create_dp(cluster, router=router)
    custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "frozen", "labels": {"refuse": "yes"},
                     "annotations": {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/address-range": "lb"}},
        "spec": {"blocks": [V4]},
    })  # fmt: skip
    refuse_labelled_pools(cluster)
    try:

        def refused() -> bool:  # the policy is in force once the API server has loaded it
            try:
                probe = {"metadata": {"annotations": {"probe": str(time.time())}}}
                custom.patch_cluster_custom_object(
                    "cilium.io", "v2", "ciliumloadbalancerippools", "frozen", probe
                )
            except k8s.ApiException as e:
                return e.status == 422
            return False

        wait_until(refused, what="the admission policy refusing pool updates")
        cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
        cd.wait_ready()
        send(mosquitto, state(router, "br-lan", 1, prefix(A)))
        failed = {"pool": "frozen", "result": "failed"}
        wait_until(
            lambda: cd.metric("dynamic_prefix_pool_syncs_total", **failed) >= 1, what="the refused write"
        )
        wait_until(lambda: condition(get_dp(cluster), "PoolsSynced") == ("False", "PoolProblems"),
                   what="PoolsSynced False")  # fmt: skip
        assert "frozen by a test policy" in json.dumps(get_dp(cluster)["status"]["conditions"])
        wait_until(lambda: "WriteRefused" in events_for(cluster, "frozen"), what="an Event on the pool")
        time.sleep(WATCHED)
        attempts = cd.metric("dynamic_prefix_pool_syncs_total", **failed)
        assert attempts == 1, f"the refused write was sent {attempts:.0f} times in {WATCHED:.0f} s"
        assert get_pool(cluster, "frozen")["spec"]["blocks"] == [V4]
        assert get_dp(cluster)["status"]["currentPrefix"] == A  # the rest of the pass went on

        # The pool changes (its label goes): the write is sent again, and goes through.
        custom.patch_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", "frozen",
                                           {"metadata": {"labels": {"refuse": None}}})  # fmt: skip
        wait_until(
            lambda: get_pool(cluster, "frozen")["spec"]["blocks"] == [V4, block(A)], what="the pool written"
        )
        wait_until(
            lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced"), what="PoolsSynced"
        )
    finally:
        lift(cluster)
