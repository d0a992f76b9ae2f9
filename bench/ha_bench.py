"""HA transitions at scale: one prefix change with many pools and HA Services, on the real LB-IPAM.

Creates ``pools`` pools, each on an address range of its own (Cilium marks
pools whose blocks overlap as conflicting), spread over DynamicPrefixes of 25
ranges each, all fed by the same router; then ``services`` LoadBalancer
Services across 10 namespaces, each selected by one pool. Cilium's LB-IPAM
(cilium-operator) gives every Service its address and clusterd annotates it.
Then one prefix change goes over the webhook, and the benchmark measures the
time until every pool and every Service's DNS target shows the new prefix
(clusterd's part), and until LB-IPAM has written every Service's new address
into its status (the whole change); the API writes clusterd made (they must
equal the objects that changed; a repeated message must cost 0) and the status
writes LB-IPAM made. Reports numbers; asserts nothing.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

from bench.common import cpu_percent_over, cpu_seconds, rss_mb
from tests.ground import testbin
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import WEBHOOK_SECRET, Barrier, Clusterd
from tests.ground.lbipam import CiliumOperator
from tests.ground.messages import post_state, prefix, state
from tests.ground.waiting import wait_until

A, B = "2001:db8:a::/64", "2001:db8:b::/64"
DNS = "external-dns.alpha.kubernetes.io/target"
RESOURCES = ("status", "pool", "service")
RANGES_PER_DP = 25  # a DynamicPrefix holds at most 32 address ranges


class Tracker:
    """Watches Services and pools; knows when each shows the target prefix."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.dns: dict[str, str] = {}
        self.ingress: dict[str, tuple[str, ...]] = {}
        self.ingress_changes = 0
        self.blocks: dict[str, str] = {}
        self.lock = threading.Lock()
        self._watches = [watch.Watch(), watch.Watch()]
        core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)

        def services() -> None:
            for ev in self._watches[0].stream(
                core.list_service_for_all_namespaces, label_selector="bench=ha"
            ):
                s = ev["object"]
                key = f"{s.metadata.namespace}/{s.metadata.name}"
                ips = tuple(i.ip for i in s.status.load_balancer.ingress or [])
                with self.lock:
                    self.dns[key] = (s.metadata.annotations or {}).get(DNS, "")
                    if self.ingress.get(key, ()) != ips:
                        self.ingress_changes += 1
                    self.ingress[key] = ips

        def pools() -> None:
            for ev in self._watches[1].stream(custom.list_cluster_custom_object, "cilium.io", "v2",
                                               "ciliumloadbalancerippools"):  # fmt: skip
                o = ev["object"]
                first = (o["spec"].get("blocks") or [{}])[0]
                with self.lock:
                    self.blocks[o["metadata"]["name"]] = first.get("start", "")

        for fn in (services, pools):
            threading.Thread(target=lambda f=fn: _quiet(f), daemon=True).start()

    def pools_on(self, p: str, pools: int) -> bool:
        """Every pool's first block (the current prefix's) is in ``p``."""
        net = p.split("::/", maxsplit=1)[0]
        with self.lock:
            return len(self.blocks) == pools and all(v.startswith(net) for v in self.blocks.values())

    def all_on(self, p: str, services: int, pools: int) -> bool:
        """clusterd's part: every pool's first block and every Service's DNS target in ``p``."""
        net = p.split("::/", maxsplit=1)[0]
        with self.lock:
            dns = len(self.dns) == services and all(v.startswith(net) for v in self.dns.values())
        return dns and self.pools_on(p, pools)

    def all_allocated(self, p: str, services: int) -> bool:
        """LB-IPAM's part: every Service holds an address in ``p`` (its status says so)."""
        net = p.split("::/", maxsplit=1)[0]
        with self.lock:
            return len(self.ingress) == services and all(
                any(ip.startswith(net) for ip in ips) for ips in self.ingress.values()
            )

    def stop(self) -> None:
        for w in self._watches:
            w.stop()


def _quiet(fn: Any) -> None:
    try:
        fn()
    except Exception:  # stop() ends the stream mid-read
        return


def run(
    kube: KubeAPI,
    work: Path,
    services: int = 1000,
    pools: int = 100,
    namespaces: int = 10,
    idle_seconds: float = 20.0,
) -> dict[str, Any]:
    api = kube.admin()
    core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    name = f"ha-{services}"
    dps = [f"{name}-{d}" for d in range(-(-pools // RANGES_PER_DP))]
    for d, dp in enumerate(dps):
        n = min(RANGES_PER_DP, pools - d * RANGES_PER_DP)
        ranges = [{"name": f"r{j}", "start": f"::f000:0:{d * RANGES_PER_DP + j:x}:0",
                   "end": f"::f000:0:{d * RANGES_PER_DP + j:x}:ffff"} for j in range(n)]  # fmt: skip
        custom.create_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", {
            "apiVersion": "dynamic-prefix.io/v1alpha1", "kind": "DynamicPrefix", "metadata": {"name": dp},
            "spec": {"acquisition": {"routerd": {"router": name, "interface": "br-lan"}},
                     "addressRanges": ranges, "transition": {"mode": "ha", "maxPrefixHistory": 2}},
        })  # fmt: skip
    for i in range(namespaces):
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=f"{name}-{i}")))
    for k in range(pools):
        custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
            "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": f"{name}-pool-{k}", "annotations": {
                "dynamic-prefix.io/name": dps[k // RANGES_PER_DP],
                "dynamic-prefix.io/address-range": f"r{k % RANGES_PER_DP}"}},
            "spec": {"blocks": [], "serviceSelector": {"matchLabels": {"bench-pool": str(k)}}},
        })  # fmt: skip

    def make(i: int) -> None:
        k = i % pools
        core.create_namespaced_service(f"{name}-{i % namespaces}", k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name=f"svc-{i}", labels={"bench": "ha", "bench-pool": str(k)}, annotations={
                "dynamic-prefix.io/name": dps[k // RANGES_PER_DP],
                "dynamic-prefix.io/service-address-range": f"r{k % RANGES_PER_DP}"}),
            spec=k8s.V1ServiceSpec(type="LoadBalancer", ip_families=["IPv6"], ports=[k8s.V1ServicePort(port=80)],
                                   allocate_load_balancer_node_ports=False),  # 3,000 would exhaust NodePorts
        ))  # fmt: skip

    binary = testbin.find("cilium-operator-generic") or testbin.build("cilium-operator-generic")
    operator = CiliumOperator(kube, binary, work / "cilium-operator")
    operator.start()
    cd = Clusterd(kube, work / name, identity=name)
    out: dict[str, Any] = {"services": services, "pools": pools, "dynamic_prefixes": len(dps)}
    tracker = Tracker(api)
    try:
        cd.wait_ready(timeout=120)
        t0 = time.monotonic()
        post_state(cd.webhook_url, WEBHOOK_SECRET, state(name, "br-lan", 1, prefix(A)))
        wait_until(lambda: tracker.pools_on(A, pools), timeout=300, what="the first prefix in every pool",
                   step=0.02)  # fmt: skip
        out["first_prefix_to_pools_seconds"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as workers:
            list(workers.map(make, range(services)))
        out["create_seconds"] = round(time.monotonic() - t0, 1)
        wait_until(lambda: tracker.all_allocated(A, services) and tracker.all_on(A, services, pools),
                   timeout=600, what="every Service allocated and annotated", step=0.05)  # fmt: skip
        out["first_addresses_seconds"] = round(time.monotonic() - t0, 2)

        def settled() -> bool:  # the statuses' last word on the first prefix is written too
            for dp in dps:
                obj = custom.get_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", dp)
                conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
                if not conds.get("ServicesSynced", {}).get("message", "").endswith("in step"):
                    return False
            return True

        wait_until(settled, timeout=120, what="ServicesSynced for the first prefix")
        barrier = Barrier(kube, cd, f"{name}-barrier")
        writes0 = cd.metric("dynamic_prefix_api_writes_total")
        procs = _pids(kube, cd, operator)
        cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
        by0 = {r: cd.metric("dynamic_prefix_api_writes_total", resource=r) for r in RESOURCES}
        with tracker.lock:
            changes0 = tracker.ingress_changes
        t0 = time.monotonic()
        code, _text = post_state(cd.webhook_url, WEBHOOK_SECRET,
                                state(name, "br-lan", 2, prefix(B), prefix(A, "withdrawn", valid=7200)))  # fmt: skip
        acked = time.monotonic() - t0
        wait_until(lambda: tracker.all_on(B, services, pools), timeout=300, what="the new prefix everywhere",
                   step=0.02)  # fmt: skip
        converge = time.monotonic() - t0
        wait_until(lambda: tracker.all_allocated(B, services), timeout=300,
                   what="LB-IPAM giving every Service its new address", step=0.02)  # fmt: skip
        allocated = time.monotonic() - t0
        cpu = {k: round(cpu_seconds(pid) - cpu0[k], 2) for k, pid in procs.items()}
        barrier.wait()  # the change's reconcile has ended: every write it made is counted
        writes = cd.metric("dynamic_prefix_api_writes_total") - writes0
        with tracker.lock:
            status_writes = tracker.ingress_changes - changes0
        out["change"] = {
            "webhook_answer": f"{code} after {acked:.2f} s",
            "converge_seconds": round(converge, 2),
            "lbipam_converge_seconds": round(allocated, 2),
            "api_writes": int(writes),
            "objects_changed": services + pools + len(dps),
            "api_writes_by_resource": {
                r: int(cd.metric("dynamic_prefix_api_writes_total", resource=r) - by0[r]) for r in RESOURCES
            },
            "lbipam_service_status_writes": status_writes,
            "note": "objects_changed = Services + pools + the DynamicPrefix statuses; converge_seconds is "
                    "clusterd's part, lbipam_converge_seconds until LB-IPAM wrote every new address",
            "cpu_seconds": cpu,
        }  # fmt: skip
        writes1 = cd.metric("dynamic_prefix_api_writes_total")
        code, _text = post_state(cd.webhook_url, WEBHOOK_SECRET,
                                state(name, "br-lan", 3, prefix(B), prefix(A, "withdrawn", valid=7200)))  # fmt: skip
        barrier.wait()  # its reconcile has ended (the answer came from its middle)
        out["repeated_message"] = {
            "answer": code,
            "api_writes": int(cd.metric("dynamic_prefix_api_writes_total") - writes1),
        }
        out["clusterd_rss_mb"] = rss_mb(cd.proc.pid)
        out["clusterd_idle"] = {"seconds": idle_seconds,
                                "cpu_percent": cpu_percent_over(cd.proc.pid, idle_seconds)}  # fmt: skip
    finally:
        tracker.stop()
        cd.stop()
        operator.stop()
    return out


def _pids(kube: KubeAPI, cd: Clusterd, operator: CiliumOperator) -> dict[str, int]:
    """Where the CPU goes during a change: clusterd, cilium-operator, and the API server and etcd."""
    procs = {"clusterd": cd.proc, "kube-apiserver": kube._apiserver, "etcd": kube._etcd}
    out = {k: p.pid for k, p in procs.items() if p is not None}
    if operator.pid is not None:
        out["cilium-operator"] = operator.pid
    return out


def _segment(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
    return (b[key] - a[key]) / (b["services"] - a["services"]) * 1000


def growth(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """How cost grows with the number of Services: marginal slopes between consecutive sizes.

    Linear cost shows as equal slopes; a later slope much steeper than an
    earlier one is super-linear growth.
    """
    runs = sorted(runs, key=lambda r: r["services"])
    flat = [{"services": r["services"], "converge_s": r["change"]["converge_seconds"],
             "lbipam_s": r["change"]["lbipam_converge_seconds"],
             "writes": r["change"]["api_writes"], "rss_mb": r["clusterd_rss_mb"]} for r in runs]  # fmt: skip
    out: dict[str, Any] = {"sizes": [r["services"] for r in flat]}
    for a, b in itertools.pairwise(flat):
        out[f"{a['services']}->{b['services']}"] = {
            "converge_ms_per_service": round(_segment(a, b, "converge_s"), 3),
            "lbipam_converge_ms_per_service": round(_segment(a, b, "lbipam_s"), 3),
            "writes_per_service": round(_segment(a, b, "writes") / 1000, 3),
            "rss_mb_per_1000_services": round(_segment(a, b, "rss_mb"), 1),
        }
    return out
