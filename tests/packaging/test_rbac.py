"""The chart's RBAC is exactly enough: clusterd works under it, and without any one rule it does not.

The ServiceAccount, ClusterRole and Role come from ``helm template`` of the
chart itself; clusterd runs with that ServiceAccount's token against the
RBAC-enforcing kube-apiserver and does everything it does in production
(leader election, status, Cilium, MetalLB and Calico pools (Calico's made, disabled and deleted), CIDR groups,
HA Services, NetworkPolicies, Events). Then each
rule is removed in turn and the same scenario must fail somewhere, with the
API server refusing (403, read from its audit log) a request that rule grants:
a run that fails only for being slow proves nothing.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.ground import crds
from tests.ground.apiserver import TEST_LABEL, KubeAPI, apply_crds
from tests.ground.clusterd_proc import WEBHOOK_SECRET, Clusterd
from tests.ground.messages import post_state, prefix, state
from tests.packaging.conftest import find, render

pytestmark = [pytest.mark.apiserver, pytest.mark.timeout(600)]

NS = "dynamic-prefix"
A, B = "2001:db8:a::/64", "2001:db8:b::/64"
_run = itertools.count()


def apply_rbac(kube: KubeAPI, cluster_rules: list[dict[str, Any]], ns_rules: list[dict[str, Any]]) -> None:
    labels = {TEST_LABEL: "true"}
    for kind, path, rules in (
        ("ClusterRole", "/apis/rbac.authorization.k8s.io/v1/clusterroles", cluster_rules),
        ("Role", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles", ns_rules),
    ):
        name = "dp-dynamic-prefix" if kind == "ClusterRole" else "dp-dynamic-prefix-leader"
        kube.request("DELETE", f"{path}/{name}")
        body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                "metadata": {"name": name, "labels": labels}, "rules": rules}  # fmt: skip
        code, resp = kube.request("POST", path, body)
        assert code == 201, resp


CALICO = ("projectcalico.org", "v3")
"""Calico pools as Calico's API server serves them (a stand-in, tests/ground/crds.py): clusterd finds
it by its APIService, which it needs the right to list."""
START_SECONDS = 60.0  # for the process to come up (the Python start alone takes seconds on a busy machine)
CHECK_SECONDS = 10.0  # each check's own deadline, once it is up


def scenario(kube: KubeAPI, token: str, work: Path) -> str | None:
    """Run clusterd as the chart's ServiceAccount; return the first check that did not pass, if any.

    Each check has its own deadline, so a slow check never eats into the next
    one's time. The checks build on each other; the first failure ends the run.
    """
    n = next(_run)
    admin = kube.admin()
    custom, core = k8s.CustomObjectsApi(admin), k8s.CoreV1Api(admin)
    dp, router, pool, group, svc = f"home-{n}", f"edge-{n}", f"pool-{n}", f"grp-{n}", f"web-{n}"
    mlb = f"mlb-{n}"
    custom.create_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", {
        "apiVersion": "dynamic-prefix.io/v1alpha1", "kind": "DynamicPrefix", "metadata": {"name": dp},
        "spec": {"acquisition": {"routerd": {"router": router, "interface": "br-lan"}},
                 "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
                 "transition": {"mode": "ha", "maxPrefixHistory": 2}},
    })  # fmt: skip
    ann = {"dynamic-prefix.io/name": dp, "dynamic-prefix.io/address-range": "lb"}
    custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": pool, "annotations": ann}, "spec": {"blocks": []}})  # fmt: skip
    custom.create_namespaced_custom_object("metallb.io", "v1beta1", "apps", "ipaddresspools", {
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": mlb, "annotations": ann}, "spec": {"addresses": []}})  # fmt: skip
    custom.create_cluster_custom_object("cilium.io", "v2", "ciliumcidrgroups", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
        "metadata": {"name": group, "annotations": {"dynamic-prefix.io/name": dp}},
        "spec": {"externalCIDRs": []}})  # fmt: skip
    custom.create_cluster_custom_object(*CALICO, "ippools", {
        "apiVersion": "/".join(CALICO), "kind": "IPPool", "metadata": {"name": f"calico-{n}",
        "annotations": ann}, "spec": {"cidr": "fd00::/120", "disabled": True, "allowedUses": ["LoadBalancer"]},
    })  # fmt: skip
    # A pinned host suffix: clusterd annotates it without waiting for an IPAM to give it an address.
    core.create_namespaced_service("apps", k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name=svc, annotations={**ann, "dynamic-prefix.io/host-suffix": "::f000:0:0:9"}),
        spec=k8s.V1ServiceSpec(type="LoadBalancer", ip_families=["IPv6"],
                               ports=[k8s.V1ServicePort(port=80)])))  # fmt: skip
    netpol = f"allow-lan-{n}"
    k8s.NetworkingV1Api(admin).create_namespaced_network_policy("apps", {
        "metadata": {"name": netpol, "annotations": {"dynamic-prefix.io/name": dp}},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}})  # fmt: skip
    kube.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/dp-dynamic-prefix")
    cd = Clusterd(kube, work / f"run-{n}", token=token, leader_election=True, identity=f"pod-{n}",
                  extra={"leaderElection": {"enabled": True, "leaseName": "dp-dynamic-prefix",
                                            "leaseDuration": 4, "retryPeriod": 0.5}})  # fmt: skip

    def webhook_applied() -> bool:
        try:
            code, _ = post_state(cd.webhook_url, WEBHOOK_SECRET, state(router, "br-lan", 1, prefix(A)))
        except OSError:  # not listening yet
            return False
        return code == 200

    posted: set[int] = set()

    def post(seq: int, *prefixes: dict[str, Any]) -> bool:
        """Send the state once (a repeat is stale); True once it was applied."""
        if seq not in posted:
            code, _ = post_state(cd.webhook_url, WEBHOOK_SECRET, state(router, "br-lan", seq, *prefixes))
            if code == 200:
                posted.add(seq)
        return seq in posted

    def calico(**want: Any) -> bool:
        """The Calico pool made for A has ``want`` in its spec (none: it is deleted)."""
        made = custom.list_cluster_custom_object(
            *CALICO, "ippools", label_selector=f"dynamic-prefix.io/parent=calico-{n}"
        )["items"]
        for_a = [p for p in made if p["metadata"]["annotations"]["dynamic-prefix.io/prefix"] == A]
        return [all(p["spec"].get(k) == v for k, v in want.items()) for p in for_a] == (
            [True] if want else []
        )

    def dp_status() -> dict[str, Any]:
        return dict(custom.get_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", dp))

    checks: list[tuple[str, float, Callable[[], Any]]] = [
        ("up", START_SECONDS, lambda: cd.get("/healthz")[0] == 200),  # nothing of RBAC's yet
        ("ready", CHECK_SECONDS, lambda: cd.get("/readyz")[0] == 200),
        ("leader", CHECK_SECONDS, lambda: cd.get("/leader")[0] == 200),
        ("webhook applied", CHECK_SECONDS, webhook_applied),
        ("status written", CHECK_SECONDS, lambda: dp_status().get("status", {}).get("currentPrefix") == A),
        ("pool synced", CHECK_SECONDS, lambda: custom.get_cluster_custom_object(
            "cilium.io", "v2", "ciliumloadbalancerippools", pool)["spec"]["blocks"]),
        ("MetalLB pool synced", CHECK_SECONDS, lambda: custom.get_namespaced_custom_object(
            "metallb.io", "v1beta1", "apps", "ipaddresspools", mlb)["spec"]["addresses"]),
        ("CIDR group synced", CHECK_SECONDS, lambda: custom.get_cluster_custom_object(
            "cilium.io", "v2", "ciliumcidrgroups", group)["spec"]["externalCIDRs"]),
        ("NetworkPolicy synced", CHECK_SECONDS, lambda: {"ipBlock": {"cidr": A}} in k8s.NetworkingV1Api(
            admin).read_namespaced_network_policy(netpol, "apps", _preload_content=False).json()["spec"][
            "ingress"][0]["from"]),
        ("Service annotated", CHECK_SECONDS, lambda: "lbipam.cilium.io/ips" in (
            core.read_namespaced_service(svc, "apps").metadata.annotations or {})),
        ("Event recorded", CHECK_SECONDS, lambda: any(
            e.involved_object.name == dp for e in core.list_event_for_all_namespaces().items)),
        ("Calico pool created", CHECK_SECONDS, lambda: calico(disabled=False)),
        ("Calico pool disabled", CHECK_SECONDS,
         lambda: post(2, prefix(B), prefix(A, "withdrawn", valid=7200)) and calico(disabled=True)),
        ("Calico pool deleted", CHECK_SECONDS,
         lambda: post(3, prefix(B), prefix(A, "withdrawn", valid=0)) and calico()),
    ]  # fmt: skip
    try:
        for what, seconds, check in checks:
            deadline = time.monotonic() + seconds
            while not check():
                if time.monotonic() > deadline:
                    return f"{what!r} (clusterd's log ends: {' | '.join(cd.log_lines[-4:])})"
                time.sleep(0.1)
    finally:
        cd.stop()
    return None


def covers(rule: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether ``rule`` grants an audited ``request``."""
    ref = request.get("objectRef", {})
    resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return (ref.get("apiGroup", "") in rule["apiGroups"] and resource in rule["resources"]
            and request["verb"] in rule["verbs"]
            and ("resourceNames" not in rule or ref.get("name") in rule["resourceNames"]))  # fmt: skip


def test_the_charts_rbac_is_enough_and_every_rule_is_needed(
    helm: Path, cluster: KubeAPI, tmp_path: Path
) -> None:
    docs = render(helm, "replicaCount=2", namespace=NS)
    cluster_rules = find(docs, "ClusterRole")["rules"]
    ns_rules = find(docs, "Role", "-leader")["rules"]
    sa = find(docs, "ServiceAccount")["metadata"]["name"]
    user = f"system:serviceaccount:{NS}:{sa}"
    for d in docs:
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            d["metadata"].setdefault("labels", {})[TEST_LABEL] = "true"
            path = ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings" if d["kind"] == "ClusterRoleBinding"
                    else f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings")  # fmt: skip
            assert cluster.request("POST", path, d)[0] == 201
    k8s.CoreV1Api(cluster.admin()).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="apps")))
    token = cluster.service_account_token(NS, sa)
    apply_crds(cluster, [crds.calico_v3()])

    apply_rbac(cluster, cluster_rules, ns_rules)
    since = cluster.audit_offset()
    failed = scenario(cluster, token, tmp_path)
    assert failed is None, f"clusterd does not work with the chart's own RBAC: {failed} did not happen"
    assert cluster.refused(since, user) == [], "clusterd was refused something under the chart's RBAC"

    wrong: dict[str, str] = {}
    for where, rules in (("ClusterRole", cluster_rules), ("Role", ns_rules)):
        for i, rule in enumerate(rules):
            fewer = copy.deepcopy(rules)
            del fewer[i]
            if where == "ClusterRole":
                apply_rbac(cluster, fewer, ns_rules)
            else:
                apply_rbac(cluster, cluster_rules, fewer)
            label = f"{where} {rule.get('resources')} {rule.get('verbs')}"
            since = cluster.audit_offset()
            failed = scenario(cluster, token, tmp_path)
            refused = [r for r in cluster.refused(since, user) if covers(rule, r)]
            if failed is None:
                wrong[label] = "clusterd works without it (not least privilege)"
            elif not refused:  # the scenario failed, but not for want of this rule: a slow run?
                wrong[label] = f"{failed} did not happen, yet no request this rule grants was refused"
    assert not wrong, wrong


def test_the_charts_cluster_role_is_exactly_what_the_targets_and_clusterd_declare(helm: Path) -> None:
    """Each target declares the RBAC it needs (clusterd/targets/): the chart grants that union, no more.

    Adding a target without its rule in the chart (or leaving a rule behind when one goes) fails here
    at once; the scenario test above then proves each rule is really used.
    """
    from clusterd.targets import rules

    granted = {(g, r, v) for rule in find(render(helm, namespace=NS), "ClusterRole")["rules"]
               for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    declared = rules()
    assert granted == declared, {
        "granted, not declared": granted - declared,
        "declared, not granted": declared - granted,
    }
