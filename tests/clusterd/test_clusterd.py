"""clusterd as a process against the real API server and Mosquitto (messages stand in for routerd).

Status and pools follow prefix changes, users' entries survive, nothing is
written for a repeated message, a v2alpha1-only Cilium works, missing Cilium
CRDs are picked up when installed, the webhook refuses bad input with a 4xx
and writes nothing, two replicas elect a leader, and a killed clusterd
resumes from the status it wrote.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.ground import crds
from tests.ground.apiserver import KubeAPI, apply_crds, delete_crd
from tests.ground.clusterd_proc import WEBHOOK_SECRET, Clusterd
from tests.ground.messages import post, post_state, prefix, sign, state
from tests.ground.mosquitto import Mosquitto
from tests.ground.mqttclient import publish
from tests.ground.require import require_program
from tests.ground.waiting import wait_until

pytestmark = [pytest.mark.apiserver, pytest.mark.mqtt]

G, V, P = "dynamic-prefix.io", "v1alpha1", "dynamicprefixes"
A, B, C = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64"
V4 = {"cidr": "192.0.2.0/24"}
RANGE = {"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}


def block(p: str) -> dict[str, str]:
    net = p.split("::/", maxsplit=1)[0]
    return {"start": f"{net}:0:f000::", "stop": f"{net}:0:ffff:ffff:ffff:ffff"}


def create_dp(
    kube: KubeAPI, name: str = "home", router: str = "edge", interface: str = "br-lan", **spec: Any
) -> None:
    body: dict[str, Any] = {
        "acquisition": {"routerd": {"router": router, "interface": interface}},
        "addressRanges": [RANGE],
        "transition": {"mode": "simple", "maxPrefixHistory": 2},
    }
    body.update(spec)
    k8s.CustomObjectsApi(kube.admin()).create_cluster_custom_object(
        G, V, P, {"apiVersion": f"{G}/{V}", "kind": "DynamicPrefix", "metadata": {"name": name}, "spec": body}
    )


def create_pool(kube: KubeAPI, name: str, blocks: list[Any], version: str = "v2", dp: str = "home",
                range_: str | None = "lb") -> None:  # fmt: skip
    ann = {"dynamic-prefix.io/name": dp}
    if range_:
        ann["dynamic-prefix.io/address-range"] = range_
    k8s.CustomObjectsApi(kube.admin()).create_cluster_custom_object("cilium.io", version, "ciliumloadbalancerippools", {
        "apiVersion": f"cilium.io/{version}", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": name, "annotations": ann}, "spec": {"blocks": blocks},
    })  # fmt: skip


def create_group(kube: KubeAPI, name: str, cidrs: list[str]) -> None:
    k8s.CustomObjectsApi(kube.admin()).create_cluster_custom_object("cilium.io", "v2", "ciliumcidrgroups", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
        "metadata": {"name": name, "annotations": {"dynamic-prefix.io/name": "home"}},
        "spec": {"externalCIDRs": cidrs},
    })  # fmt: skip


def get_dp(kube: KubeAPI, name: str = "home") -> dict[str, Any]:
    return dict(k8s.CustomObjectsApi(kube.admin()).get_cluster_custom_object(G, V, P, name))


def get_pool(
    kube: KubeAPI, name: str, plural: str = "ciliumloadbalancerippools", version: str = "v2"
) -> dict[str, Any]:
    return dict(
        k8s.CustomObjectsApi(kube.admin()).get_cluster_custom_object("cilium.io", version, plural, name)
    )


def current(kube: KubeAPI, name: str = "home") -> str | None:
    return get_dp(kube, name).get("status", {}).get("currentPrefix")


def condition(obj: dict[str, Any], type_: str) -> tuple[str, str] | None:
    c = next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)
    return (c["status"], c["reason"]) if c else None


def events_for(kube: KubeAPI, name: str) -> list[str]:
    evs = k8s.CoreV1Api(kube.admin()).list_event_for_all_namespaces().items
    return [e.reason for e in evs if e.involved_object.name == name]


def send(mosquitto: Mosquitto, doc: dict[str, Any]) -> None:
    publish(mosquitto.plain_port, f"dynamic-prefix/{doc['router']}/{doc['interface']}/state", json.dumps(doc),
            retain=True)  # fmt: skip


def test_mqtt_prefix_changes_drive_status_pools_and_cidr_groups(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]  # a router id unique to this test (the retained topic too)
    create_dp(cluster, router=router)
    create_pool(cluster, "lb-pool", [V4])
    create_group(cluster, "cluster-egress", ["198.51.100.0/24"])
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(lambda: current(cluster) == A, what="status.currentPrefix = A")
    wait_until(lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(A)], what="pool has A")
    dp = get_dp(cluster)
    assert dp["status"]["prefixSource"] == "routerd"
    assert dp["status"]["addressRanges"][0]["cidrs"] == ["2001:db8:a:0:f000::/68"]
    wait_until(lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced"), what="PoolsSynced")
    assert condition(dp, "PrefixAcquired") == ("True", "Acquired")
    group = get_pool(cluster, "cluster-egress", "ciliumcidrgroups")
    assert group["spec"]["externalCIDRs"] == ["198.51.100.0/24", "2001:db8:a::/64"]

    send(mosquitto, state(router, "br-lan", 2, prefix(B), prefix(A, "withdrawn", valid=7200)))
    wait_until(lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(B), block(A)],
               what="pool has B then A")  # fmt: skip
    dp = get_dp(cluster)
    assert [(h["prefix"], h["state"]) for h in dp["status"]["history"]] == [(B, "active"), (A, "draining")]
    assert get_pool(cluster, "cluster-egress", "ciliumcidrgroups")["spec"]["externalCIDRs"] == [
        "198.51.100.0/24", "2001:db8:b::/64", "2001:db8:a::/64"]  # fmt: skip
    wait_until(lambda: {"PrefixAcquired", "PrefixChanged"} <= set(events_for(cluster, "home")), what="Events")

    # A repeated message and a heartbeat write nothing.
    rvs = (
        get_dp(cluster)["metadata"]["resourceVersion"],
        get_pool(cluster, "lb-pool")["metadata"]["resourceVersion"],
    )
    done = cd.metric("dynamic_prefix_reconcile_duration_seconds_count")
    send(mosquitto, state(router, "br-lan", 2, prefix(B), prefix(A, "withdrawn", valid=7200)))
    send(mosquitto, state(router, "br-lan", 3, prefix(B), prefix(A, "withdrawn", valid=7200)))
    wait_until(
        lambda: cd.metric("dynamic_prefix_reconcile_duration_seconds_count") > done, what="a reconcile"
    )
    wait_until(lambda: cd.metric("dynamic_prefix_messages_total", transport="mqtt", result="stale") >= 1,
               what="the duplicate counted as stale")  # fmt: skip
    assert (get_dp(cluster)["metadata"]["resourceVersion"],
            get_pool(cluster, "lb-pool")["metadata"]["resourceVersion"]) == rvs  # fmt: skip


def test_a_pool_annotated_later_is_synced_at_once_and_released_when_unannotated(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(lambda: current(cluster) == A, what="A")
    create_pool(cluster, "late", [V4])
    wait_until(lambda: get_pool(cluster, "late")["spec"]["blocks"] == [V4, block(A)], what="late pool synced")
    api = k8s.CustomObjectsApi(cluster.admin())
    api.patch_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", "late",
                                    {"metadata": {"annotations": {"dynamic-prefix.io/name": None}}})  # fmt: skip
    wait_until(lambda: get_pool(cluster, "late")["spec"]["blocks"] == [V4], what="our block taken back")
    assert "dynamic-prefix.io/managed" not in get_pool(cluster, "late")["metadata"]["annotations"]


def test_a_pool_naming_a_missing_range_gets_an_event_and_is_left_alone(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    create_pool(cluster, "typo", [V4], range_="loadbalancer")
    create_pool(cluster, "orphan", [V4], dp="nosuchprefix")
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(
        lambda: condition(get_dp(cluster), "PoolsSynced") == ("False", "PoolProblems"), what="PoolProblems"
    )
    assert "address range 'loadbalancer' is not in the DynamicPrefix" in json.dumps(get_dp(cluster)["status"])
    wait_until(lambda: "NotSynced" in events_for(cluster, "typo") and "NotSynced" in events_for(cluster, "orphan"),
               what="Events on both pools")  # fmt: skip
    assert get_pool(cluster, "typo")["spec"]["blocks"] == [V4]
    assert get_pool(cluster, "orphan")["spec"]["blocks"] == [V4]


def test_a_cluster_serving_only_v2alpha1(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    for name in ("ciliumloadbalancerippools.cilium.io", "ciliumcidrgroups.cilium.io"):
        delete_crd(cluster, name)
    apply_crds(cluster, crds.cilium_v2alpha1_only())
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    create_pool(cluster, "old-cilium", [V4], version="v2alpha1")
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(lambda: get_pool(cluster, "old-cilium", version="v2alpha1")["spec"]["blocks"] == [V4, block(A)],
               what="v2alpha1 pool synced")  # fmt: skip
    assert "v2alpha1" in cd.log()


def test_missing_pool_crds_are_a_condition_then_picked_up(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    # No pool kind at all is served (Calico's IPPool is a pool kind too; the test ground puts it back).
    for name in (*crds.CILIUM_CLUSTERD_KINDS, crds.METALLB_POOLS, crds.CALICO_POOLS):
        delete_crd(cluster, name)
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 1, prefix(A)))
    wait_until(lambda: condition(get_dp(cluster), "PoolsSynced") == ("False", "PoolCRDsMissing"),
               what="PoolCRDsMissing")  # fmt: skip
    apply_crds(cluster, crds.cilium_clusterd_kinds())
    create_pool(cluster, "after", [])
    wait_until(
        lambda: get_pool(cluster, "after")["spec"]["blocks"] == [block(A)], what="pool synced after install"
    )
    wait_until(lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced"), what="PoolsSynced")
    assert cd.proc.poll() is None


def test_a_watch_started_before_its_kind_is_served_picks_it_up(cluster: KubeAPI) -> None:
    """A CRD is served a moment after it appears (longer for a big one like Cilium's upstream CRDs).

    clusterd starts a pool watch when the CRD appears; a list that lands in
    between gets a 404, and no later CRD event restarts the watch.
    """
    import asyncio

    from clusterd.adapters.kube import Kube, Resource

    for name in crds.CILIUM_CLUSTERD_KINDS:
        delete_crd(cluster, name)

    async def scenario() -> list[str]:
        seen: list[str] = []
        kube = Kube(cluster.admin())
        w = kube.watch("pools", Resource("cilium.io", "v2", "ciliumloadbalancerippools"),
                       lambda kind, _obj: seen.append(kind))  # fmt: skip
        try:
            for _ in range(100):  # the first list 404s: not served
                await asyncio.sleep(0.05)
                if seen:
                    break
            apply_crds(cluster, crds.cilium_clusterd_kinds())
            for _ in range(300):
                await asyncio.sleep(0.05)
                if "SYNC" in seen:
                    break
        finally:
            w.stop()
            kube.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen[:1] == ["GONE"] and "SYNC" in seen, seen


def test_webhook_refuses_bad_input_with_4xx_and_writes_nothing(
    cluster: KubeAPI, clusterd_factory: Any
) -> None:
    create_dp(cluster, router="edge")
    cd = clusterd_factory()
    cd.wait_ready()
    wait_until(lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced")
               and condition(get_dp(cluster), "PrefixAcquired") == ("False", "WaitingForPrefix"),
               what="clusterd's first status")  # fmt: skip
    rv = get_dp(cluster)["metadata"]["resourceVersion"]
    good = json.dumps(state("edge", "br-lan", 10, prefix(A))).encode()

    def attempt(body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        return post(cd.webhook_url, body, headers)

    import time

    now = int(time.time())
    cases = [
        ("bad signature", good, sign(b"not-the-secret", good), 401, "bad signature"),
        ("no signature", good, {"Content-Type": "application/json"}, 401, "missing"),
        ("stale timestamp", good, sign(WEBHOOK_SECRET, good, now - 3600), 401, "check NTP"),
        ("future timestamp", good, sign(WEBHOOK_SECRET, good, now + 3600), 401, "check NTP"),
        ("oversized body", b"{" + b" " * (10 << 20) + b"}", sign(WEBHOOK_SECRET, b"{}"), 413, ""),
        ("invalid JSON", b"{nope", sign(WEBHOOK_SECRET, b"{nope"), 400, "not JSON"),
    ]
    for p_, fragment in (("::/0", "1..64"), ("fe80::/64", "link-local"), ("ff02::/64", "multicast"),
                         ("2001:db8::1/128", "1..64")):  # fmt: skip
        body = json.dumps(state("edge", "br-lan", 11, prefix(p_))).encode()
        cases.append((f"prefix {p_}", body, sign(WEBHOOK_SECRET, body), 400, fragment))
    wrong = json.dumps({**state("edge", "br-lan", 12, prefix(A)), "version": 9}).encode()
    cases.append(("wrong schema version", wrong, sign(WEBHOOK_SECRET, wrong), 400, "unsupported schema"))
    ula = json.dumps(state("edge", "br-lan", 13, prefix("fd00:1::/64"))).encode()
    cases.append(("ULA", ula, sign(WEBHOOK_SECRET, ula), 422, "unique-local"))
    for what, body, headers, code, fragment in cases:
        got, text = attempt(body, headers)
        assert got == code, f"{what}: {got} {text}"
        assert fragment in text, f"{what}: {text}"
    assert get_dp(cluster)["metadata"]["resourceVersion"] == rv, "a refused request wrote something"

    headers = sign(WEBHOOK_SECRET, good)
    got, text = attempt(good, headers)
    assert got == 200 and "applied to home" in text
    assert current(cluster) == A
    got, text = attempt(good, headers)
    assert got == 409 and "replayed" in text
    rv = get_dp(cluster)["metadata"]["resourceVersion"]
    # routerd retrying after a lost answer: the same body under a later timestamp than the first
    # send's (not ``now + 1``: the cases above may take longer than a second, and that would be
    # the first send's timestamp again, a true replay).
    later = int(headers["X-Dynamic-Prefix-Timestamp"]) + 1
    got, text = attempt(good, sign(WEBHOOK_SECRET, good, later))
    assert got == 200 and "applied to home" in text, f"the same message signed again is a retry: {text}"
    assert get_dp(cluster)["metadata"]["resourceVersion"] == rv, "a retry wrote something"
    older = state("edge", "br-lan", 9, prefix(B))
    got, text = post_state(cd.webhook_url, WEBHOOK_SECRET, older)
    assert got == 409 and "not newer" in text
    got, text = post_state(cd.webhook_url, WEBHOOK_SECRET, state("other", "br-lan", 1, prefix(B)))
    assert got == 202 and "no DynamicPrefix" in text
    assert current(cluster) == A


def test_two_replicas_one_writes_and_the_other_takes_over(cluster: KubeAPI, clusterd_factory: Any) -> None:
    create_dp(cluster, router="edge")
    one = clusterd_factory(leader_election=True, identity="one")
    one.wait_ready()
    two = clusterd_factory(leader_election=True, identity="two")
    two.wait_ready()  # followers are ready (a rolling update must not stall); /leader tells them apart
    assert two.get("/leader")[0] == 503 and one.get("/leader")[0] == 200
    got, text = post_state(two.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", 1, prefix(A)))
    assert got == 503 and "not the leader" in text
    assert current(cluster) is None
    got, _ = post_state(one.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", 2, prefix(A)))
    assert got == 200 and current(cluster) == A
    one.kill()  # no clean release: two must wait for the lease to run out (4 s)
    wait_until(lambda: two.get("/leader")[0] == 200, timeout=15, what="two leads")
    got, _ = post_state(
        two.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", 3, prefix(B), prefix(A, "deprecated"))
    )
    assert got == 200 and current(cluster) == B
    lease = k8s.CoordinationV1Api(cluster.admin()).read_namespaced_lease(
        "dynamic-prefix-clusterd", "dynamic-prefix"
    )
    assert lease.spec.holder_identity == "two" and lease.spec.lease_transitions >= 1


class LeaderSampler:
    """Samples the Lease and every replica's /leader and leader metric, 20 times a second, in a thread."""

    def __init__(self, kube: KubeAPI, replicas: list[Clusterd]) -> None:
        self.api = k8s.CoordinationV1Api(kube.admin())
        self.replicas = replicas  # the test appends the ones it starts later
        self.samples: list[tuple[float, dict[str, bool], str | None, int]] = []
        """(monotonic time, leading by identity, the Lease's holder, its transitions)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            leading = {}
            for cd in list(self.replicas):
                if cd.proc.poll() is None:
                    by_health = cd.get("/leader")[0] == 200
                    by_metric = cd.metric("dynamic_prefix_leader") == 1
                    leading[cd.identity] = by_health or by_metric
            try:
                spec = self.api.read_namespaced_lease("dynamic-prefix-clusterd", "dynamic-prefix").spec
            except k8s.ApiException as e:
                if e.status != 404:  # not created yet
                    raise
                spec = k8s.V1LeaseSpec()
            self.samples.append(
                (time.monotonic(), leading, spec.holder_identity, spec.lease_transitions or 0)
            )

    def watch(self, seconds: float) -> None:
        """Observe for ``seconds``: the assertion is over the whole period, not its end."""
        self._stop.wait(seconds)

    def since(self, t0: float) -> list[tuple[float, dict[str, bool], str | None, int]]:
        return [s for s in self.samples if s[0] >= t0]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_replicas_whose_clocks_differ_by_more_than_the_lease_never_lead_together(
    cluster: KubeAPI, clusterd_factory: Any
) -> None:
    """Followers time the Lease by their own clocks, never by the holder's renewTime (issue 12 item 4).

    Three replicas: one on the true clock, one a day ahead, one a day behind (libfaketime, wall and
    monotonic clocks both shifted); the lease is 4 s. A follower whose clock is ahead must not take
    a live leader's Lease, and one whose clock is behind must still take over from a dead one.
    """
    faketime = require_program("faketime", "faketime")
    lease = 4
    sampler = LeaderSampler(cluster, [])

    def start(identity: str, *wrap: str) -> Clusterd:
        cd: Clusterd = clusterd_factory(
            leader_election=True, identity=identity, lease_duration=lease, wrap=wrap
        )
        sampler.replicas.append(cd)
        return cd

    def joins_a_live_leader(identity: str, skew: str, holder: str, transitions: int) -> Clusterd:
        cd = start(identity, faketime, "-f", skew)
        cd.wait_ready()
        t0 = time.monotonic()
        sampler.watch(2 * lease)
        held = sampler.since(t0)
        assert held and all(h == holder and n == transitions for _, _, h, n in held), (
            f"{identity} ({skew}) took a live leader's Lease: {sorted({(h, n) for _, _, h, n in held})}"
        )
        assert all(lead[holder] and not lead[identity] for _, lead, _, _ in held), "leadership moved"
        return cd

    def dies(old: Clusterd, new: Clusterd) -> None:
        old.kill()  # no release: the follower has to see the Lease stand still
        killed = time.monotonic()
        wait_until(lambda: new.get("/leader")[0] == 200, timeout=lease + 4, what=f"{new.identity} takes over")
        print(f"{new.identity} took over {time.monotonic() - killed:.1f} s after {old.identity} was killed")

    try:
        true = start("true")
        wait_until(lambda: true.get("/leader")[0] == 200, timeout=20, what="true leads")
        ahead = joins_a_live_leader("ahead", "+1d", holder="true", transitions=0)
        dies(true, ahead)
        behind = joins_a_live_leader("behind", "-1d", holder="ahead", transitions=1)
        dies(ahead, behind)  # ahead's renewTime is two days in behind's future
        spec = sampler.api.read_namespaced_lease("dynamic-prefix-clusterd", "dynamic-prefix").spec
        assert spec.holder_identity == "behind" and spec.lease_transitions == 2
        # The sampler, too, must see behind lead (it samples in its own thread: give it the time).
        wait_until(lambda: any(lead.get("behind") for _, lead, _, _ in sampler.samples), timeout=5,
                   what="the sampler sees behind lead")  # fmt: skip
        sampler.watch(1.0)  # and a while after, so a second leader would show
    finally:
        sampler.stop()
    both = [(round(t, 2), lead) for t, lead, _, _ in sampler.samples if sum(lead.values()) > 1]
    assert not both, f"two replicas led at once: {both[:5]}"


def test_a_leader_whose_renewals_hang_steps_down_before_its_lease_could_pass(
    cluster: KubeAPI, clusterd_factory: Any
) -> None:
    """The leader stops leading once renewDeadline (2/3 of the 4 s lease) passes without a renewal,
    even while its renewal call hangs; it leads again when the API server answers."""
    lease = 4
    one = clusterd_factory(leader_election=True, identity="one", lease_duration=lease)
    wait_until(lambda: one.get("/leader")[0] == 200, timeout=20, what="one leads")
    with cluster.frozen():
        frozen_at = time.monotonic()
        # Its last renewal was sent before the freeze, so a follower could take over at the
        # earliest `lease` seconds after the freeze: the leader must have stopped by then.
        wait_until(lambda: one.get("/leader")[0] == 503, timeout=lease, what="one steps down")
        print(f"stepped down {time.monotonic() - frozen_at:.1f} s into the freeze (lease {lease} s)")
        assert one.metric("dynamic_prefix_leader") == 0
    wait_until(lambda: one.get("/leader")[0] == 200, timeout=20, what="one leads again")


async def test_a_replica_that_stopped_leading_sends_no_further_write(cluster: KubeAPI) -> None:
    """A reconcile under way when leadership ends writes nothing more: every write checks first.

    Driven in-process, at the write calls a reconcile makes, so the moment is exact; the
    writes would go to the real API server.
    """
    from clusterd.adapters.kube import Kube
    from clusterd.config import parse
    from clusterd.controller import Controller, NotLeader
    from clusterd.core import pools as poolplan
    from clusterd.crd import DynamicPrefixStatus
    from clusterd.metrics import Metrics
    from clusterd.targets import cilium_pool
    from clusterd.targets.base import Patch

    create_dp(cluster)
    create_pool(cluster, "lb-pool", [V4])
    ctl = Controller(Kube(cluster.admin()), parse({"leaderElection": {"enabled": True}}), Metrics())
    ctl.cache.served[cilium_pool.TARGET.kind] = "v2"
    ctl.set_leader(True)
    ctl.set_leader(False)  # the elector's renew deadline passed while the reconcile was planning
    dp, pool = get_dp(cluster), get_pool(cluster, "lb-pool")
    with pytest.raises(NotLeader):
        await ctl.writer.status(dp, DynamicPrefixStatus(current_prefix=A))
    ann = pool["metadata"]["annotations"]
    w = poolplan.plan([V4], ann, [block(A)]).final
    assert w is not None
    with pytest.raises(NotLeader):
        await ctl.writer.patch(cilium_pool.TARGET, pool, Patch(
            {poolplan.MANAGED: poolplan.managed_annotation(w.managed)}, "blocks", w.entries))  # fmt: skip
    assert current(cluster) is None and get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4]


def test_killed_mid_drain_and_restarted_loses_no_history(cluster: KubeAPI, clusterd_factory: Any) -> None:
    create_dp(cluster, router="edge")
    create_pool(cluster, "lb-pool", [V4])
    first = clusterd_factory()
    first.wait_ready()
    assert post_state(first.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", 1, prefix(A)))[0] == 200
    assert post_state(first.webhook_url, WEBHOOK_SECRET,
                      state("edge", "br-lan", 2, prefix(B), prefix(A, "withdrawn", valid=7200)))[0] == 200  # fmt: skip
    wait_until(
        lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(B), block(A)], what="B, A"
    )
    before = get_dp(cluster)["status"]["history"]
    first.kill()
    second = clusterd_factory()
    second.wait_ready()
    got, text = post_state(second.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", 2, prefix(C)))
    assert got == 409, text  # the restarted clusterd remembers sequence 2 from the status
    assert post_state(second.webhook_url, WEBHOOK_SECRET,
                      state("edge", "br-lan", 3, prefix(C), prefix(B, "deprecated")))[0] == 200  # fmt: skip
    after = get_dp(cluster)["status"]["history"]
    assert [(h["prefix"], h["state"]) for h in after] == [(C, "active"), (B, "draining"), (A, "draining")]
    assert (
        after[2]["acquiredAt"] == before[1]["acquiredAt"]
        and after[2]["validUntil"] == before[1]["validUntil"]
    )
    wait_until(lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(C), block(B), block(A)],
               what="C, B, A")  # fmt: skip


def test_mqtt_over_tls_with_a_password(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str, tmp_path: Path
) -> None:
    from tests.ground.mosquitto import USERS

    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    password = tmp_path / "mqtt.pass"
    password.write_text(USERS["clusterd"])
    mqtt = {"host": "127.0.0.1", "port": mosquitto.tls_port, "caFile": str(mosquitto.ca_file),
            "username": "clusterd", "passwordFile": str(password)}  # fmt: skip
    cd = clusterd_factory(webhook=False, extra={"mqtt": mqtt})
    cd.wait_ready()
    doc = json.dumps(state(router, "br-lan", 1, prefix(A)))
    publish(mosquitto.auth_port, f"dynamic-prefix/{router}/br-lan/state", doc, retain=True, username="routerd",
            password=USERS["routerd"])  # fmt: skip
    wait_until(lambda: current(cluster) == A, what="A over TLS")
    assert USERS["clusterd"] not in cd.log()


def test_sigterm_hands_the_lease_over_at_once(cluster: KubeAPI, clusterd_factory: Any) -> None:

    create_dp(cluster, router="edge")
    one = clusterd_factory(leader_election=True, identity="one", lease_duration=30)
    one.wait_ready()
    two = clusterd_factory(leader_election=True, identity="two", lease_duration=30)
    wait_until(lambda: "follower" in two.get("/readyz")[1], what="two follows")
    assert one.stop() == 0
    # Had one not released the Lease, two could not lead before the 30 s lease ran out; the
    # bound is the lease's, with room for a loaded machine (a 10 s bound flaked under load).
    wait_until(lambda: two.get("/leader")[0] == 200, timeout=20, what="two leads before one's lease expires")
    assert post_state(two.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", 1, prefix(A)))[0] == 200


def test_kubectl_get_dp_shows_degraded_and_its_reason(cluster: KubeAPI, clusterd_factory: Any) -> None:
    """The Table kubectl prints carries the PoolsSynced and Degraded columns, with the reason."""
    create_dp(cluster, acquisition={"routerAdvertisement": {"interface": "eth0", "enabled": True}})
    clusterd_factory().wait_ready()  # no raFallback: it has no RA listener
    wait_until(lambda: condition(get_dp(cluster), "Degraded") == ("True", "RAListenerUnavailable"),
               what="Degraded: RAListenerUnavailable")  # fmt: skip
    resp = cluster.admin().call_api(
        "GET", f"{cluster.url}/apis/{G}/{V}/{P}?includeObject=Object",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )  # fmt: skip
    resp.read()
    table = json.loads(resp.data)
    assert resp.status == 200 and table["kind"] == "Table", table
    names = [c["name"] for c in table["columnDefinitions"]]
    row = dict(zip(names, table["rows"][0]["cells"], strict=True))
    # The condition of the object this very row was printed from (a second GET may see a later one).
    pools = condition(table["rows"][0]["object"], "PoolsSynced")
    assert pools is not None and row["Pools"] == pools[0]
    assert (row["Name"], row["Degraded"], row["Reason"]) == ("home", "True", "RAListenerUnavailable")
    assert "enable raFallback" in row["Message"]


def test_a_replayed_or_forged_mqtt_message_is_logged_with_the_sequences(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port, webhook=False)
    cd.wait_ready()
    send(mosquitto, state(router, "br-lan", 5, prefix(A)))
    wait_until(lambda: current(cluster) == A, what="A applied")
    send(mosquitto, state(router, "br-lan", 5, prefix(A)))  # a redelivery: not worth a line
    send(mosquitto, state(router, "br-lan", 3, prefix(B)))  # an old sequence with other content
    cd.wait_log("ignored a message from")
    line = next(x for x in cd.log_lines if "ignored a message from" in x)
    for field in (f"router={router}", "interface=br-lan", "sequence=3", "expected=>5"):
        assert field in line, line
    assert cd.metric("dynamic_prefix_messages_total", transport="mqtt", result="stale") == 2
    assert sum("ignored a message from" in x for x in cd.log_lines) == 1
    assert current(cluster) == A


def test_a_pool_status_written_by_cilium_starts_no_pass(cluster: KubeAPI, clusterd_factory: Any) -> None:
    """LB-IPAM rewrites a pool's status (its counts) at every allocation; clusterd reads none of it.

    Each such write used to start a pass over the whole DynamicPrefix, planning every one of
    its Services again (docs/performance.md, "HA Services"): now it makes no work at all.
    """
    create_dp(cluster, router="edge")
    create_pool(cluster, "lb-pool", [V4])
    cd = clusterd_factory()
    cd.wait_ready()
    assert post_state(cd.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", 1, prefix(A)))[0] == 200
    wait_until(lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced"), what="PoolsSynced")
    time.sleep(1.0)  # the pass's last writes and their echoes
    passes = cd.metric("dynamic_prefix_reconcile_duration_seconds_count")
    custom = k8s.CustomObjectsApi(cluster.admin())
    for used in range(5):
        counts = {"type": "cilium.io/IPsUsed", "status": "Unknown", "reason": "noreason", "message": str(used),
                  "lastTransitionTime": "2026-11-29T00:00:00Z"}  # fmt: skip
        custom.patch_cluster_custom_object_status("cilium.io", "v2", "ciliumloadbalancerippools", "lb-pool",
                                                  {"status": {"conditions": [counts]}})  # fmt: skip
        time.sleep(0.3)
    time.sleep(2.0)
    assert cd.metric("dynamic_prefix_reconcile_duration_seconds_count") == passes
    assert get_pool(cluster, "lb-pool")["status"]["conditions"][0]["message"] == "4"  # the writes landed
