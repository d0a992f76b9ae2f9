"""Faults during prefix changes, on the whole real pipeline; the invariants are checked after each.

Every scenario stops by itself (deadlines, per-test timeout). docs/reliability.md
has one row per scenario with what was done, what was checked and the result.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from clusterd.targets.calico_pool import derived_name
from tests.clusterd.test_calico_pools import create_parent, disabled, pool
from tests.ground.admission import HoldingWebhook
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import Barrier, Clusterd
from tests.ground.lbipam import CiliumOperator
from tests.ground.netlab import AdvPrefix, Lab
from tests.ground.require import require_program
from tests.ground.routerd_proc import Routerd, current, states
from tests.ground.waiting import wait_until
from tests.reliability.pipeline import DP, USER_MLB, Pipeline, block

pytestmark = [pytest.mark.lab, pytest.mark.apiserver, pytest.mark.mqtt, pytest.mark.timeout(240)]

A, B, C = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64"
LONG = {"valid": 86400, "preferred": 14400}


@pytest.fixture
def pipe(cluster: KubeAPI, cilium_operator: CiliumOperator, lab: Lab, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(cluster, lab, tmp_path)
    yield p
    p.close()


def started(pipe: Pipeline, **clusterd: Any) -> tuple[Clusterd, Routerd]:
    """clusterd and routerd up, prefix A current everywhere, the Service holding its A address."""
    cd = pipe.start_clusterd(**clusterd)
    pipe.advertise([AdvPrefix(A, **LONG)], start=True)
    r = pipe.start_routerd()
    pipe.wait_current(A)
    pipe.wait_service_address(A)
    return cd, r


@pytest.mark.parametrize("persistence", [False, True])
def test_broker_killed_and_restarted_during_a_prefix_change(
    cluster: KubeAPI, cilium_operator: CiliumOperator, lab: Lab, tmp_path: Path, persistence: bool
) -> None:
    pipe = Pipeline(cluster, lab, tmp_path, persistence=persistence)
    try:
        _, r = started(pipe)
        pipe.broker.stop(signal.SIGKILL)
        pipe.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, **LONG)])
        r.wait_for(lambda m: current(m) == B)  # routerd has it; the broker does not
        pipe.broker.start()
        pipe.wait_current(B, timeout=90)
        assert block(A) in pipe.pool()  # A's valid lifetime (two-hour rule) is not over
        pipe.check_invariants()
    finally:
        pipe.close()


def test_api_server_and_etcd_stopped_during_a_drain(pipe: Pipeline, cluster: KubeAPI) -> None:
    cd, r = started(pipe)
    pipe.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, **LONG)])
    pipe.wait_current(B)
    cluster.stop()
    errors = cd.metric("dynamic_prefix_reconcile_errors_total")
    pipe.advertise(
        [AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, valid=0, preferred=0), AdvPrefix(C, **LONG)]
    )
    r.wait_for(lambda m: current(m) == C)

    # clusterd fails to write C while the API is gone, and retries with backoff: 0.5 s, then 1 s, then
    # 2 s, so the fourth failure comes at least 3.5 s after the first. Without backoff it comes
    # within milliseconds (hundreds of failures a second).
    def failures(at_least: int) -> bool:
        return cd.metric("dynamic_prefix_reconcile_errors_total") - errors >= at_least

    wait_until(lambda: failures(1), 30, "a failed attempt to write C")
    first = time.monotonic()
    wait_until(lambda: failures(4), 30, "three retries, failed too")
    assert time.monotonic() - first >= 3.0, "clusterd retried without backing off"
    cluster.start()
    pipe.restart_watch()
    pipe.wait_current(C, timeout=120)
    assert pipe.pool()[-3:] == [block(C), block(B), block(A)]
    assert all(cd.proc.poll() is None for cd in pipe.clusterds), "clusterd died with the API server"
    pipe.check_invariants()


def test_clusterd_killed_between_the_status_write_and_the_pool_writes(pipe: Pipeline, cluster: KubeAPI,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    from tests.packaging.conftest import find, render
    from tests.packaging.test_rbac import apply_rbac

    helm = tmp_path  # the chart's RBAC, minus the right to patch pools
    from tests.ground import testbin

    docs = render(testbin.find("helm") or testbin.build("helm"), namespace="dynamic-prefix")
    rules = find(docs, "ClusterRole")["rules"]
    binding = find(docs, "ClusterRoleBinding")
    binding["metadata"].setdefault("labels", {})["dynamic-prefix.io/test"] = "true"
    cluster.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    token = cluster.service_account_token("dynamic-prefix", find(docs, "ServiceAccount")["metadata"]["name"])
    no_pools = [r for r in rules if not {"ciliumloadbalancerippools", "ipaddresspools"} & set(r["resources"])]
    apply_rbac(cluster, no_pools, [])
    del helm
    first = pipe.start_clusterd("first", token=token)
    pipe.advertise([AdvPrefix(A, **LONG)], start=True)
    pipe.start_routerd()
    wait_until(lambda: pipe.dp().get("status", {}).get("currentPrefix") == A, 60, "status written")
    assert block(A) not in pipe.pool()  # the pool writes failed: the state of a crash right here
    assert pipe.metallb_pool() == [USER_MLB]
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    apply_rbac(cluster, rules, [])
    pipe.start_clusterd("second", token=token)
    pipe.wait_current(A)
    pipe.check_invariants()


def test_leader_killed_mid_transition_the_other_replica_finishes_it(pipe: Pipeline) -> None:
    le = {"leader_election": True, "lease_duration": 4.0}
    one = pipe.start_clusterd("one", **le)
    wait_until(lambda: one.get("/leader")[0] == 200, 20, "one leads")
    two = pipe.start_clusterd("two", **le)
    pipe.advertise([AdvPrefix(A, **LONG)], start=True)
    pipe.start_routerd()
    pipe.wait_current(A)
    one.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    pipe.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, **LONG)])
    wait_until(lambda: two.get("/leader")[0] == 200, 15, "two takes over")
    took = time.monotonic() - killed
    print(f"takeover after {took:.1f} s (lease 4 s)")
    assert took < 4.0 + 2.0, f"took over after {took:.1f} s (lease duration 4 s)"
    pipe.wait_current(B, timeout=30)
    pipe.check_invariants()


def test_routerd_restarted_relearns_and_its_sequence_goes_on(pipe: Pipeline) -> None:
    _, r = started(pipe)
    before = r.wait_for(lambda m: current(m) == A)
    status = pipe.dp()["status"]
    r = pipe.start_routerd()  # stop and start: it re-learns from the RAs it solicits
    after = r.wait_for(lambda m: current(m) == A, timeout=30)
    assert after["sequence"] > before["sequence"] and after["boot"] != before["boot"]
    # The status records the new run (its boot orders later messages); nothing else moves.
    wait_until(lambda: pipe.dp()["status"]["source"]["boot"] == after["boot"], 20, "the new boot recorded")
    now = pipe.dp()["status"]
    kept = ("currentPrefix", "history", "addressRanges", "leaseExpiresAt")
    assert {k: now.get(k) for k in kept} == {k: status.get(k) for k in kept}
    pipe.check_invariants()


def test_routerd_cut_off_longer_than_the_old_prefixs_valid_lifetime(pipe: Pipeline) -> None:
    pipe.start_clusterd()
    pipe.advertise([AdvPrefix(A, valid=25, preferred=20)], start=True)
    r = pipe.start_routerd()
    pipe.wait_current(A)
    pipe.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, **LONG)])
    r.wait_for(lambda m: current(m) == B)
    pipe.link.cut()  # the cable between router and broker
    r.wait_for(lambda m: all(p["prefix"] != A or p["validLifetime"] == 0 for p in m["prefixes"]), timeout=40)
    pipe.link.mend()
    pipe.wait_current(B, timeout=90)
    wait_until(lambda: block(A) not in pipe.pool(), 30, "A's block gone once its lifetime ran out")
    history = {h["prefix"]: h["state"] for h in pipe.dp()["status"]["history"]}
    assert history[B] == "active" and history.get(A) in ("expired", None)
    pipe.check_invariants()


def test_the_routers_clock_jumps_back_a_day(pipe: Pipeline) -> None:
    faketime = require_program("faketime", "faketime")
    _, r = started(pipe)
    before = r.wait_for(lambda m: current(m) == A)
    r = pipe.start_routerd(wrap=[faketime, "-f", "-1d"])
    after = r.wait_for(lambda m: current(m) == A, timeout=30)
    assert after["observedAt"] < before["observedAt"], "the clock did not go back"
    assert after["sequence"] > before["sequence"], "ordering must not follow the wall clock"
    pipe.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, **LONG)])
    pipe.wait_current(B)  # clusterd applies the newer state although its wall time is a day older
    pipe.check_invariants()


def test_prefix_flapping_costs_a_bounded_number_of_writes(pipe: Pipeline) -> None:
    cd = pipe.start_clusterd(webhook=True)  # the webhook for the barrier
    pipe.advertise([AdvPrefix(A, **LONG)], start=True)
    pipe.start_routerd(hold_down=2.0)
    pipe.wait_current(A)
    barrier = Barrier(pipe.kube, cd)
    writes = cd.metric("dynamic_prefix_api_writes_total")
    flips = [[AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, **LONG)],
             [AdvPrefix(B, valid=0, preferred=0), AdvPrefix(A, **LONG)]] * 3  # fmt: skip
    for adv in flips:  # A -> B -> A -> B ... within seconds
        pipe.advertise(adv)
        time.sleep(0.4)
    ras = pipe.routerd_status()["ras_accepted"]

    def routerd_done_and_heard() -> bool:
        """routerd took an RA sent after the last flip and published the state it gives; clusterd got it."""
        st = pipe.routerd_status()
        latest = st["interfaces"][pipe.lab.host_if]
        received = cd.metric("dynamic_prefix_messages_total", transport="mqtt", result="received")
        return bool(st["ras_accepted"] >= ras + 2  # one RA may have been on its way before the flip
                    and current(latest) == A and states(latest).get(B) == "withdrawn"
                    and received >= st["published"])  # fmt: skip

    wait_until(routerd_done_and_heard, 30, "routerd's last coalesced state (hold-down 2 s) at clusterd")
    barrier.wait()  # ...and every reconcile it started has made and counted its writes
    spent = cd.metric("dynamic_prefix_api_writes_total") - writes
    print(f"flapping: {spent:.0f} API writes for 6 flips")
    # Each applied change costs a status write, two pool writes (Cilium's, MetalLB's), a CIDR group
    # write and the Service: the hold-down lets at most a few through, not one per flip.
    assert spent <= 4 * 5, f"{spent} API writes for 6 flips"
    pool = pipe.pool()
    assert block(A) in pool and block(B) in pool
    pipe.check_invariants()


A_LB, B_LB = "2001:db8:a:0:f000::/68", "2001:db8:b:0:f000::/68"  # the range "lb" in each prefix
POOL_A, POOL_B = derived_name("lb", A_LB), derived_name("lb", B_LB)
USER_PEER = {"ipBlock": {"cidr": "2001:db8:ffff::/48", "except": ["2001:db8:ffff:1::/64"]}}
BGP_SELECTOR = {"matchLabels": {"bgp": "yes"}}
ADVERT = {
    "advertisementType": "Service",
    "service": {"addresses": ["LoadBalancerIP"]},
    "selector": BGP_SELECTOR,
}
IPPOOLS, ADVERTS = "/apis/crd.projectcalico.org/v1/ippools", "/apis/cilium.io/v2/ciliumbgpadvertisements"
STORED_POOLS = "/registry/crd.projectcalico.org/ippools/"  # etcd's keys
STORED_ADVERTS = "/registry/cilium.io/ciliumbgpadvertisements/"
A_VALID = 60
"""A's valid lifetime: longer than the outage and the catch-up after it (about 6 s here)."""


def mlb(prefix: str) -> str:
    b = block(prefix)
    return f"{b['start']}-{b['stop']}"


def peers(kube: KubeAPI) -> list[Any]:
    _, got = kube.request("GET", "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/from-lan")
    return list(got["spec"]["ingress"][0]["from"])


def names(kube: KubeAPI, path: str) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kube.request("GET", path)[1]["items"])


def test_api_server_and_etcd_killed_mid_change_on_every_kind_of_target(
    pipe: Pipeline, cluster: KubeAPI
) -> None:
    """Besides the pipeline's objects: a Calico parent pool, an advertised subnet and a NetworkPolicy.

    An admission webhook holds clusterd's create of B's Calico pool: the status and every holder's
    first step are written, B's pool is not, A's is not disabled yet. kube-apiserver and etcd are
    SIGKILLed right there, with that create in flight, and started again.
    """
    custom = pipe.custom
    custom.patch_cluster_custom_object(*DP, "home", {"spec": {"subnets": [
        {"name": "svc", "offset": 1, "prefixLength": 112, "bgp": {"advertise": True}}]}})  # fmt: skip
    custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "svc-pool", "annotations": {"dynamic-prefix.io/name": "home",
                                                          "dynamic-prefix.io/subnet": "svc"}},
        "spec": {"blocks": [], "serviceSelector": BGP_SELECTOR},
    })  # fmt: skip
    parent = create_parent(cluster)
    k8s.NetworkingV1Api(cluster.admin()).create_namespaced_network_policy("apps", {
        "metadata": {"name": "from-lan", "annotations": {"dynamic-prefix.io/name": "home"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [USER_PEER]}]},
    })  # fmt: skip
    cd = pipe.start_clusterd()
    pipe.advertise([AdvPrefix(A, valid=A_VALID, preferred=A_VALID - 10)], start=True)
    r = pipe.start_routerd()
    pipe.wait_current(A)
    wait_until(lambda: disabled(cluster, POOL_A) is False and peers(cluster) == [USER_PEER, {"ipBlock": {"cidr": A}}]
               and names(cluster, ADVERTS) == ["home-svc"], 30, "A in every target")  # fmt: skip
    advert = custom.get_cluster_custom_object("cilium.io", "v2", "ciliumbgpadvertisements", "home-svc")
    assert advert["spec"]["advertisements"] == [ADVERT]

    rule = {"apiGroups": ["crd.projectcalico.org"], "apiVersions": ["*"], "operations": ["CREATE"],
            "resources": ["ippools"]}  # fmt: skip
    probe = {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": {"name": "probe"},
             "spec": {**parent["spec"], "cidr": "fd00:0:0:fffe::/120"}}  # fmt: skip
    hook = HoldingWebhook(cluster, rule, lambda req: req["object"]["metadata"]["name"] == POOL_B)
    with hook.installed(lambda: cluster.request("POST", f"{IPPOOLS}?dryRun=All", probe)):
        pipe.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, **LONG)])
        renumbered = time.monotonic()
        wait_until(hook.held.is_set, 60, "clusterd creating B's Calico pool")
        # Mid-change: the status and each holder's first step (adds only) are written; B's pool is
        # being created, A's is still enabled.
        assert pipe.dp()["status"]["currentPrefix"] == B
        assert {mlb(B), mlb(A), USER_MLB} <= set(pipe.metallb_pool())
        assert block(B) in pipe.pool() and block(A) in pipe.pool()
        assert sorted(map(str, peers(cluster))) == sorted(map(str, [USER_PEER, {"ipBlock": {"cidr": A}},
                                                                    {"ipBlock": {"cidr": B}}]))  # fmt: skip
        assert (disabled(cluster, POOL_A), pool(cluster, POOL_B)) == (False, None)
        assert cluster.etcd_versions(STORED_POOLS) == {"lb": 1, POOL_A: 1}
        errors = cd.metric("dynamic_prefix_reconcile_errors_total")
        cluster.stop(signal.SIGKILL)
        hook.release()
        wait_until(lambda: cd.metric("dynamic_prefix_reconcile_errors_total") - errors >= 2, 30,
                   "clusterd failing to write, and retrying")  # fmt: skip
        cluster.start()
        pipe.restart_watch()
    wait_until(lambda: disabled(cluster, POOL_A) is True and disabled(cluster, POOL_B) is False,
               60, "B's Calico pool made and A's disabled after the outage")  # fmt: skip
    pipe.wait_current(B)
    print(f"the change finished {time.monotonic() - renumbered:.1f} s after B was advertised")
    history = {h["prefix"]: h["state"] for h in pipe.dp()["status"]["history"]}
    assert history == {B: "active", A: "draining"}, f"A's lifetime ({A_VALID} s) ran out first: {history}"
    # Calico: B's pool made once, A's written once more (disabled, its cidr as it was), the parent never.
    assert cluster.etcd_versions(STORED_POOLS) == {"lb": 1, POOL_A: 2, POOL_B: 1}
    assert (pool(cluster, POOL_A) or {})["spec"] == {**parent["spec"], "cidr": A_LB, "disabled": True}
    assert (pool(cluster, POOL_B) or {})["spec"] == {**parent["spec"], "cidr": B_LB, "disabled": False}
    # MetalLB and Cilium: B and A (draining), the user's entries kept.
    assert {mlb(B), mlb(A), USER_MLB} <= set(pipe.metallb_pool())
    assert pipe.pool()[-2:] == [block(B), block(A)]
    # The policy: B and A beside the user's peer, untouched.
    now = peers(cluster)
    assert now[0] == USER_PEER
    assert sorted(map(str, now[1:])) == sorted(map(str, [{"ipBlock": {"cidr": A}}, {"ipBlock": {"cidr": B}}]))
    # The advertisement selects Services by label: one object, never written after its create.
    assert cluster.etcd_versions(STORED_ADVERTS) == {"home-svc": 1}
    after = custom.get_cluster_custom_object("cilium.io", "v2", "ciliumbgpadvertisements", "home-svc")
    assert after["spec"] == advert["spec"]
    pipe.check_invariants()

    # A's valid lifetime ends: every target drops it, A's Calico pool is deleted.
    def a_gone() -> bool:
        return bool(pool(cluster, POOL_A) is None and mlb(A) not in pipe.metallb_pool()
                    and block(A) not in pipe.pool() and {"ipBlock": {"cidr": A}} not in peers(cluster))  # fmt: skip

    wait_until(a_gone, A_VALID + 30, "A dropped everywhere once its lifetime ended")
    assert cluster.etcd_versions(STORED_POOLS) == {"lb": 1, POOL_B: 1}
    assert disabled(cluster, POOL_B) is False
    assert peers(cluster) == [USER_PEER, {"ipBlock": {"cidr": B}}]
    assert {mlb(B), USER_MLB} <= set(pipe.metallb_pool())
    assert cluster.etcd_versions(STORED_ADVERTS) == {"home-svc": 1}
    assert r.proc.poll() is None
    assert all(c.proc.poll() is None for c in pipe.clusterds), "clusterd died with the API server"
    pipe.check_invariants()
