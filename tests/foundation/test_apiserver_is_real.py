"""The Kubernetes API the tests use is a real kube-apiserver with RBAC.

Proves what a fake would not do: schema validation (422), optimistic
concurrency (409), the status subresource ignoring status on the main
resource, and RBAC denying a ServiceAccount without rights (403).
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client as k8s

from tests.ground import testbin
from tests.ground.apiserver import TEST_LABEL, KubeAPI

pytestmark = pytest.mark.apiserver

DP = ("dynamic-prefix.io", "v1alpha1", "dynamicprefixes")
MLB_POOLS = ("metallb.io", "v1beta1", "ipaddresspools")


def dynamic_prefix(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "dynamic-prefix.io/v1alpha1",
        "kind": "DynamicPrefix",
        "metadata": {"name": name},
        "spec": {
            "acquisition": {"routerAdvertisement": {"interface": "eth0", "enabled": True}},
            "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
            **spec,
        },
    }


def test_reports_the_version_it_was_built_as(kube: KubeAPI) -> None:
    info = json.loads(kube.get_raw("/version"))
    assert info["gitVersion"] == f"v{testbin.versions()['KUBERNETES_VERSION']}"


def test_schema_violation_is_rejected_with_422(kube: KubeAPI) -> None:
    api = k8s.CustomObjectsApi(kube.admin())
    bad = dynamic_prefix("bad", transition={"mode": "sometimes", "maxPrefixHistory": 99})
    with pytest.raises(k8s.ApiException) as err:
        api.create_cluster_custom_object(*DP, bad)
    assert err.value.status == 422
    assert "spec.transition.mode" in str(err.value.body)
    assert "spec.transition.maxPrefixHistory" in str(err.value.body)


def test_stale_resource_version_gets_409(kube: KubeAPI) -> None:
    api = k8s.CustomObjectsApi(kube.admin())
    created = api.create_cluster_custom_object(*DP, dynamic_prefix("home"))
    stale = dict(created)
    api.patch_cluster_custom_object(*DP, "home", {"spec": {"transition": {"mode": "ha"}}})
    with pytest.raises(k8s.ApiException) as err:
        api.replace_cluster_custom_object(*DP, "home", stale)
    assert err.value.status == 409


def test_status_sent_through_the_main_resource_is_ignored(kube: KubeAPI) -> None:
    api = k8s.CustomObjectsApi(kube.admin())
    api.create_cluster_custom_object(*DP, dynamic_prefix("home"))
    api.patch_cluster_custom_object(*DP, "home", {"status": {"currentPrefix": "2001:db8::/64"}})
    assert "status" not in api.get_cluster_custom_object(*DP, "home")
    api.patch_cluster_custom_object_status(*DP, "home", {"status": {"currentPrefix": "2001:db8::/64"}})
    assert api.get_cluster_custom_object(*DP, "home")["status"]["currentPrefix"] == "2001:db8::/64"


def test_service_account_without_rights_gets_403_and_with_rights_succeeds(kube: KubeAPI) -> None:
    admin = kube.admin()
    core = k8s.CoreV1Api(admin)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="rbac-test")))
    restricted = k8s.CustomObjectsApi(kube.client_as("rbac-test", "nobody"))
    with pytest.raises(k8s.ApiException) as err:
        restricted.list_cluster_custom_object(*DP)
    assert err.value.status == 403

    rbac = k8s.RbacAuthorizationV1Api(admin)
    labels = {TEST_LABEL: "true"}
    rbac.create_cluster_role(
        k8s.V1ClusterRole(
            metadata=k8s.V1ObjectMeta(name="dp-reader", labels=labels),
            rules=[
                k8s.V1PolicyRule(
                    api_groups=["dynamic-prefix.io"], resources=["dynamicprefixes"], verbs=["list"]
                )
            ],
        )
    )
    rbac.create_cluster_role_binding(
        k8s.V1ClusterRoleBinding(
            metadata=k8s.V1ObjectMeta(name="dp-reader", labels=labels),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="dp-reader"
            ),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace="rbac-test")],
        )
    )
    assert restricted.list_cluster_custom_object(*DP)["items"] == []
    with pytest.raises(k8s.ApiException) as err:  # list was granted, create was not
        restricted.create_cluster_custom_object(*DP, dynamic_prefix("x"))
    assert err.value.status == 403


def test_clean_state_between_tests_part_one(kube: KubeAPI) -> None:
    k8s.CustomObjectsApi(kube.admin()).create_cluster_custom_object(*DP, dynamic_prefix("leftover"))
    k8s.CoreV1Api(kube.admin()).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="leftover")))
    # A kind its group serves only outside the preferred version (metallb.io prefers v1beta2).
    k8s.CustomObjectsApi(kube.admin()).create_namespaced_custom_object(*MLB_POOLS[:2], "leftover", MLB_POOLS[2], {
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "leftover"},
        "spec": {"addresses": ["198.18.0.0/32"]}})  # fmt: skip


def test_clean_state_between_tests_part_two(kube: KubeAPI) -> None:
    """Runs after part one: nothing it created is left."""
    assert k8s.CustomObjectsApi(kube.admin()).list_cluster_custom_object(*DP)["items"] == []
    assert k8s.CustomObjectsApi(kube.admin()).list_cluster_custom_object(*MLB_POOLS)["items"] == []
    names = {n.metadata.name for n in k8s.CoreV1Api(kube.admin()).list_namespace().items}
    assert "leftover" not in names


def test_cilium_crds_serve_v2_and_v2alpha1(kube: KubeAPI) -> None:
    api = k8s.CustomObjectsApi(kube.admin())
    pool = {
        "apiVersion": "cilium.io/v2alpha1",
        "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "p"},
        "spec": {"blocks": [{"cidr": "192.0.2.0/24"}]},
    }
    api.create_cluster_custom_object("cilium.io", "v2alpha1", "ciliumloadbalancerippools", pool)
    got = api.get_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", "p")
    assert got["apiVersion"] == "cilium.io/v2"
    assert got["spec"]["blocks"] == [{"cidr": "192.0.2.0/24"}]
