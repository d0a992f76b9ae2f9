"""HA transitions at scale: one prefix change with many pools and HA Services.

Creates ``services`` LoadBalancer Services across 10 namespaces (the benchmark
plays Cilium's part and writes each one's address into its status) and
``pools`` pools, lets clusterd settle, then sends one prefix change over the
webhook and measures the time until every pool and Service shows the new
prefix, and the API writes clusterd made (it must equal the objects that
changed; a repeated message must cost 0). Reports numbers; asserts nothing.
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
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import WEBHOOK_SECRET, Barrier, Clusterd
from tests.ground.messages import post_state, prefix, state
from tests.ground.waiting import wait_until

A, B = "2001:db8:a::/64", "2001:db8:b::/64"
DNS = "external-dns.alpha.kubernetes.io/target"
RESOURCES = ("status", "pool", "service")


def addr(p: str, i: int) -> str:
    return f"{p.split('::/', maxsplit=1)[0]}:0:f000::{i:x}"


class Tracker:
    """Watches Services and pools; knows when each shows the target prefix."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.dns: dict[str, str] = {}
        self.blocks: dict[str, str] = {}
        self.lock = threading.Lock()
        self._watches = [watch.Watch(), watch.Watch()]
        core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)

        def services() -> None:
            for ev in self._watches[0].stream(
                core.list_service_for_all_namespaces, label_selector="bench=ha"
            ):
                s = ev["object"]
                with self.lock:
                    self.dns[f"{s.metadata.namespace}/{s.metadata.name}"] = (
                        s.metadata.annotations or {}
                    ).get(DNS, "")

        def pools() -> None:
            for ev in self._watches[1].stream(custom.list_cluster_custom_object, "cilium.io", "v2",
                                               "ciliumloadbalancerippools"):  # fmt: skip
                o = ev["object"]
                first = (o["spec"].get("blocks") or [{}])[0]
                with self.lock:
                    self.blocks[o["metadata"]["name"]] = first.get("start", "")

        for fn in (services, pools):
            threading.Thread(target=lambda f=fn: _quiet(f), daemon=True).start()

    def all_on(self, p: str, services: int, pools: int) -> bool:
        net = p.split("::/", maxsplit=1)[0]
        with self.lock:
            return (len(self.dns) == services and all(v.startswith(net) for v in self.dns.values())
                    and len(self.blocks) == pools and all(v.startswith(net) for v in self.blocks.values()))  # fmt: skip

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
    custom.create_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", {
        "apiVersion": "dynamic-prefix.io/v1alpha1", "kind": "DynamicPrefix", "metadata": {"name": name},
        "spec": {"acquisition": {"routerd": {"router": name, "interface": "br-lan"}},
                 "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
                 "transition": {"mode": "ha", "maxPrefixHistory": 2}},
    })  # fmt: skip
    for i in range(namespaces):
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=f"{name}-{i}")))
    for i in range(pools):
        custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
            "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": f"{name}-pool-{i}", "annotations": {"dynamic-prefix.io/name": name,
                                                                      "dynamic-prefix.io/address-range": "lb"}},
            "spec": {"blocks": []},
        })  # fmt: skip

    def make(i: int) -> None:
        ns, svc = f"{name}-{i % namespaces}", f"svc-{i}"
        core.create_namespaced_service(ns, k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name=svc, labels={"bench": "ha"}, annotations={
                "dynamic-prefix.io/name": name, "dynamic-prefix.io/service-address-range": "lb"}),
            spec=k8s.V1ServiceSpec(type="LoadBalancer", ip_families=["IPv6"], ports=[k8s.V1ServicePort(port=80)],
                                   allocate_load_balancer_node_ports=False),  # 3,000 would exhaust NodePorts
        ))  # fmt: skip
        core.patch_namespaced_service_status(
            svc, ns, {"status": {"loadBalancer": {"ingress": [{"ip": addr(A, i + 1)}]}}}
        )

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make, range(services)))
    create_s = time.monotonic() - t0
    cd = Clusterd(kube, work / name, identity=name)
    out: dict[str, Any] = {"services": services, "pools": pools, "create_seconds": round(create_s, 1)}
    tracker = Tracker(api)
    try:
        cd.wait_ready(timeout=120)
        t0 = time.monotonic()
        post_state(cd.webhook_url, WEBHOOK_SECRET, state(name, "br-lan", 1, prefix(A)))
        wait_until(lambda: tracker.all_on(A, services, pools), timeout=300, what="the first prefix everywhere",
                   step=0.02)  # fmt: skip
        out["initial_converge_seconds"] = round(time.monotonic() - t0, 2)

        def settled() -> bool:  # the status's last word on the first prefix is written too
            dp = custom.get_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", name)
            conds = {c["type"]: c for c in dp.get("status", {}).get("conditions", [])}
            return conds.get("ServicesSynced", {}).get("message") == f"{services} Service(s) in step"

        wait_until(settled, timeout=60, what="ServicesSynced for the first prefix")
        barrier = Barrier(kube, cd, f"{name}-barrier")
        writes0 = cd.metric("dynamic_prefix_api_writes_total")
        cpu0 = {k: cpu_seconds(pid) for k, pid in _pids(kube, cd).items()}
        by0 = {r: cd.metric("dynamic_prefix_api_writes_total", resource=r) for r in RESOURCES}
        t0 = time.monotonic()
        code, _text = post_state(cd.webhook_url, WEBHOOK_SECRET,
                                state(name, "br-lan", 2, prefix(B), prefix(A, "withdrawn", valid=7200)))  # fmt: skip
        acked = time.monotonic() - t0
        wait_until(
            lambda: tracker.all_on(B, services, pools),
            timeout=300,
            what="the new prefix everywhere",
            step=0.02,
        )
        converge = time.monotonic() - t0
        cpu = {k: round(cpu_seconds(pid) - cpu0[k], 2) for k, pid in _pids(kube, cd).items()}
        barrier.wait()  # the change's reconcile has ended: every write it made is counted
        writes = cd.metric("dynamic_prefix_api_writes_total") - writes0
        out["change"] = {
            "webhook_answer": f"{code} after {acked:.2f} s",
            "converge_seconds": round(converge, 2),
            "api_writes": int(writes),
            "objects_changed": services + pools + 1,
            "api_writes_by_resource": {
                r: int(cd.metric("dynamic_prefix_api_writes_total", resource=r) - by0[r]) for r in RESOURCES
            },
            "note": "objects_changed = Services + pools + the DynamicPrefix status",
            "cpu_seconds": cpu,
        }
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
    return out


def _pids(kube: KubeAPI, cd: Clusterd) -> dict[str, int]:
    """Where the CPU goes during a change: clusterd, and the API server and etcd it writes to."""
    procs = {"clusterd": cd.proc, "kube-apiserver": kube._apiserver, "etcd": kube._etcd}
    return {k: p.pid for k, p in procs.items() if p is not None}


def _segment(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
    return (b[key] - a[key]) / (b["services"] - a["services"]) * 1000


def growth(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """How cost grows with the number of Services: marginal slopes between consecutive sizes.

    Linear cost shows as equal slopes; a later slope much steeper than an
    earlier one is super-linear growth.
    """
    runs = sorted(runs, key=lambda r: r["services"])
    flat = [{"services": r["services"], "converge_s": r["change"]["converge_seconds"],
             "writes": r["change"]["api_writes"], "rss_mb": r["clusterd_rss_mb"]} for r in runs]  # fmt: skip
    out: dict[str, Any] = {"sizes": [r["services"] for r in flat]}
    for a, b in itertools.pairwise(flat):
        out[f"{a['services']}->{b['services']}"] = {
            "converge_ms_per_service": round(_segment(a, b, "converge_s"), 3),
            "writes_per_service": round(_segment(a, b, "writes") / 1000, 3),
            "rss_mb_per_1000_services": round(_segment(a, b, "rss_mb"), 1),
        }
    return out
