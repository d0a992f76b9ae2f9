"""docs/cilium.md's manifests apply as written: each is created (server-side dry run) on the real API
server with Cilium's own CRDs and ours, so a field name the upstream schema does not know fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ground.apiserver import KubeAPI

pytestmark = [pytest.mark.apiserver]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cilium.md"


def manifests() -> list[dict[str, Any]]:
    blocks = PAGE.read_text().split("```yaml\n")[1:]
    return [d for b in blocks for d in yaml.safe_load_all(b.split("```", 1)[0]) if d]


def path(kube: KubeAPI, doc: dict[str, Any]) -> str:
    group, _, version = doc["apiVersion"].rpartition("/")
    if not group:
        return f"/api/{version}/namespaces/{doc['metadata']['namespace']}/{doc['kind'].lower()}s"
    _, crds = kube.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    crd = next(
        c for c in crds["items"] if c["spec"]["group"] == group and c["spec"]["names"]["kind"] == doc["kind"]
    )
    assert crd["spec"]["scope"] == "Cluster", doc["kind"]
    return f"/apis/{group}/{version}/{crd['spec']['names']['plural']}"


def test_every_manifest_on_the_cilium_page_is_accepted(kube: KubeAPI) -> None:
    docs = manifests()
    kinds = {d["kind"] for d in docs}
    assert {"DynamicPrefix", "CiliumLoadBalancerIPPool", "CiliumCIDRGroup", "Service", "CiliumBGPClusterConfig",
            "CiliumBGPPeerConfig", "CiliumBGPAdvertisement"} <= kinds  # fmt: skip
    for doc in docs:
        code, answer = kube.request("POST", path(kube, doc) + "?dryRun=All&fieldValidation=Strict", doc)
        assert code == 201, (doc["kind"], doc["metadata"]["name"], answer)
