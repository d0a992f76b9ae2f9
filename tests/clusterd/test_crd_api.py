"""The DynamicPrefix CRD on the real API server: the Go operator's manifests apply, bad specs are refused.

The CRD is generated from clusterd/crd/ (tests/docs checks manifests/ is
current); these tests send objects to the API server and check what its
schema and CEL rules say.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s

from clusterd.crd import DynamicPrefixSpec
from tests.ground.apiserver import KubeAPI

pytestmark = pytest.mark.apiserver

DPS = "/apis/dynamic-prefix.io/v1alpha1/dynamicprefixes"

# From the Go dynamic-prefix-operator's README, unchanged.
ORIGINAL_DP = {
    "apiVersion": "dynamic-prefix.io/v1alpha1",
    "kind": "DynamicPrefix",
    "metadata": {"name": "home-ipv6"},
    "spec": {
        "acquisition": {"routerAdvertisement": {"interface": "eth0", "enabled": True}},
        "addressRanges": [{"name": "loadbalancers", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
        "transition": {"mode": "simple", "maxPrefixHistory": 2},
    },
}
ORIGINAL_POOL = {
    "apiVersion": "cilium.io/v2alpha1",
    "kind": "CiliumLoadBalancerIPPool",
    "metadata": {
        "name": "ipv6-lb-pool",
        "annotations": {
            "dynamic-prefix.io/name": "home-ipv6",
            "dynamic-prefix.io/address-range": "loadbalancers",
        },
    },
    "spec": {"blocks": []},
}


def dp(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "acquisition": {"routerd": {"router": "edge", "interface": "br-lan"}},
        "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
    }
    base.update(spec)
    return {
        "apiVersion": "dynamic-prefix.io/v1alpha1",
        "kind": "DynamicPrefix",
        "metadata": {"name": name},
        "spec": base,
    }


def test_the_original_operators_manifests_apply_unchanged(kube: KubeAPI) -> None:
    code, body = kube.request("POST", DPS, ORIGINAL_DP)
    assert code == 201, body
    assert body["spec"]["transition"] == {"mode": "simple", "maxPrefixHistory": 2}
    code, body = kube.request("POST", "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools", ORIGINAL_POOL)
    assert code == 201, body
    ha = dp(
        "ha",
        transition={"mode": "ha", "maxPrefixHistory": 3},
        subnets=[
            {
                "name": "lan",
                "offset": 1,
                "prefixLength": 64,
                "bgp": {"advertise": True, "community": "65000:1"},
            }
        ],
        acquisition={"dhcpv6pd": {"interface": "wan", "requestedPrefixLength": 56}},
    )
    ha["spec"]["addressRanges"] = [{"name": "lb", "start": "::1:0:0:0:10", "end": "::1:0:0:0:ff"}]
    code, body = kube.request("POST", DPS, ha)
    assert code == 201, body
    # The server kept every field (none pruned), and clusterd reads what the server stored as it was sent.
    assert DynamicPrefixSpec.model_validate(body["spec"]) == DynamicPrefixSpec.model_validate(ha["spec"])


def test_defaults_and_printer_columns(kube: KubeAPI) -> None:
    code, body = kube.request("POST", DPS, dp("d", transition={}))
    assert code == 201 and body["spec"]["transition"] == {"mode": "simple", "maxPrefixHistory": 2}
    _, crd = kube.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/dynamicprefixes.dynamic-prefix.io"
    )
    cols = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == ["Prefix", "Source", "Pools", "Degraded", "Reason", "Message", "Age"]
    assert crd["spec"]["names"]["shortNames"] == ["dp"]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"acquisition": {}}, "at least one acquisition source"),
        (
            {"addressRanges": [{"name": "lb", "start": "::ffff:0:0:0", "end": "::f000:0:0:0"}]},
            "start must not be after end",
        ),
        ({"addressRanges": [{"name": "lb", "start": "1::f000", "end": "1::ffff"}]}, "only set host bits"),
        (
            {
                "addressRanges": [
                    {"name": "lb", "start": "::1", "end": "::2"},
                    {"name": "lb", "start": "::3", "end": "::4"},
                ]
            },
            "Duplicate value",
        ),
        ({"addressRanges": [{"name": "lb", "start": "zzz", "end": "::2"}]}, "start must be an IPv6 suffix"),
        (
            {"addressRanges": [{"name": "lb", "start": "10.0.0.1", "end": "::2"}]},
            "start must be an IPv6 suffix",
        ),
        ({"transition": {"mode": "sometimes"}}, "spec.transition.mode"),
        ({"transition": {"maxPrefixHistory": 11}}, "spec.transition.maxPrefixHistory"),
        ({"subnets": [{"name": "s", "offset": 0, "prefixLength": 40}]}, "spec.subnets[0].prefixLength"),
        ({"acquisition": {"routerd": {"router": "edge"}}}, "spec.acquisition.routerd.interface"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(
    kube: KubeAPI, spec: dict[str, Any], fragment: str
) -> None:
    code, body = kube.request("POST", DPS, dp("bad", **spec))
    assert code == 422, body
    assert fragment in body["message"]


def test_status_only_through_the_subresource_and_the_schema_checks_it(kube: KubeAPI) -> None:
    api = k8s.CustomObjectsApi(kube.admin())
    api.create_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", dp("s"))
    with pytest.raises(k8s.ApiException) as err:
        api.patch_cluster_custom_object_status(
            "dynamic-prefix.io",
            "v1alpha1",
            "dynamicprefixes",
            "s",
            {"status": {"history": [{"prefix": "x", "state": "sideways"}]}},
        )
    assert err.value.status == 422


suffix = st.integers(0, 2**64 - 1).map(lambda n: str(IPv6Address(n)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix, suffix)
def test_the_api_servers_start_end_order_agrees_with_ours(kube: KubeAPI, a: str, b: str) -> None:
    code, body = kube.request(
        "POST", DPS + "?dryRun=All", dp("order", addressRanges=[{"name": "lb", "start": a, "end": b}])
    )
    assert (code == 201) == (IPv6Address(a) <= IPv6Address(b)), body


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 64), st.integers(0, 127), st.booleans())
def test_suffixes_must_fit_the_host_bits_of_routerds_prefix_length(
    kube: KubeAPI, length: int, bit: int, with_pd: bool
) -> None:
    """routerd.prefixLength sets the host part (it wins over dhcpv6pd.requestedPrefixLength, since
    only prefixes of that length are used): a suffix with bit ``bit`` (0 = the last) set fits
    exactly when that bit is below the prefix."""
    suffix = str(IPv6Address(1 << bit))
    acquisition: dict[str, Any] = {
        "routerd": {"router": "edge", "interface": "br-lan", "prefixLength": length}
    }
    if with_pd:
        acquisition["dhcpv6pd"] = {"interface": "wan", "requestedPrefixLength": 64}
    body = dp(
        "hostbits", acquisition=acquisition, addressRanges=[{"name": "lb", "start": suffix, "end": suffix}]
    )
    code, answer = kube.request("POST", DPS + "?dryRun=All", body)
    assert (code == 201) == (bit < 128 - length), answer
    if code != 201:
        assert "only set host bits" in answer["message"]


def test_a_suffix_for_a_56_is_accepted_with_routerd_prefix_length_56(kube: KubeAPI) -> None:
    body = dp("pd56", acquisition={"routerd": {"router": "edge", "interface": "wan", "prefixLength": 56}},
              addressRanges=[{"name": "lb", "start": "::1:0:0:0:f000", "end": "::1:0:0:0:ffff"}])  # fmt: skip
    code, answer = kube.request("POST", DPS, body)
    assert code == 201, answer
