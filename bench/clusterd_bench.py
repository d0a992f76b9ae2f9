"""clusterd benchmarks: RA on the wire -> DynamicPrefix status and pool blocks, start-up, and footprint.

Real everything: an RA injected on the router side of a lab, routerd,
Mosquitto (or the webhook), clusterd, kube-apiserver. Latency runs from just
before the RA is sent (one ``sendto`` on a socket opened beforehand) to the
moment a watch in this process sees the object change. Start-up runs from
just before clusterd's process is started (RA fallback, radvd already
advertising) to the moment the watch sees the pool's ``spec.blocks`` hold the
prefix. Reports numbers; asserts nothing.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

from bench.common import cpu_percent_over, cpu_seconds, rss_mb, summary_ms
from bench.routerd_bench import B, flip
from tests.ground import crds
from tests.ground.apiserver import KubeAPI, apply_crds, load_yaml_docs, start_session_apiserver
from tests.ground.clusterd_proc import Clusterd
from tests.ground.mosquitto import Mosquitto
from tests.ground.netlab import AdvPrefix, Lab
from tests.ground.routerd_proc import Routerd, routerd_toml
from tests.ground.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


def block_start(prefix: Any) -> str:
    return f"{str(prefix.network_address).rstrip(':')}:0:f000::"


class Observer:
    """Watches one object in a thread and timestamps every version of it."""

    def __init__(self, api: k8s.ApiClient, group: str, version: str, plural: str, name: str) -> None:
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self._w = watch.Watch()
        custom = k8s.CustomObjectsApi(api)
        args = (group, version, plural)

        def run() -> None:
            stream = self._w.stream(
                custom.list_cluster_custom_object, *args, field_selector=f"metadata.name={name}"
            )
            with contextlib.suppress(Exception):  # stop() ends the stream mid-read
                for ev in stream:
                    self.events.put((time.monotonic(), ev["object"]))

        threading.Thread(target=run, daemon=True).start()

    def first(self, predicate: Any, after: float, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            at, obj = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if at >= after and predicate(obj):
                return at

    def stop(self) -> None:
        self._w.stop()


def setup_kube(work: Path, cilium: list[dict[str, Any]] | None = None) -> KubeAPI:
    """An API server with the DynamicPrefix CRD and Cilium's (default: the two clusterd writes)."""
    kube = start_session_apiserver(work / "kube")
    apply_crds(kube, [*load_yaml_docs([ROOT / "manifests/crds/dynamic-prefix.io_dynamicprefixes.yaml"]),
                      *(crds.cilium_clusterd_kinds() if cilium is None else cilium)])  # fmt: skip
    k8s.CoreV1Api(kube.admin()).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="dynamic-prefix"))
    )
    return kube


def dp_and_pool(custom: k8s.CustomObjectsApi, name: str, acquisition: dict[str, Any]) -> None:
    """A DynamicPrefix with one address range, and a pool (with a user's IPv4 block) that follows it."""
    custom.create_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", {
        "apiVersion": "dynamic-prefix.io/v1alpha1", "kind": "DynamicPrefix", "metadata": {"name": name},
        "spec": {"acquisition": acquisition,
                 "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}]},
    })  # fmt: skip
    custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": name, "annotations": {"dynamic-prefix.io/name": name,
                                                   "dynamic-prefix.io/address-range": "lb"}},
        "spec": {"blocks": [{"cidr": "192.0.2.0/24"}]},
    })  # fmt: skip


def pipeline(
    work: Path, kube: KubeAPI, transport: str, changes: int = 60, idle_seconds: float = 60.0
) -> dict[str, Any]:
    """RA -> routerd -> (MQTT | webhook) -> clusterd -> status and pool, ``changes`` times."""
    api = kube.admin()
    custom = k8s.CustomObjectsApi(api)
    name = f"bench-{transport}"
    broker = None
    if transport == "mqtt":  # the webhook run has no broker: clusterd runs one receiver, as a user's would
        broker = Mosquitto(work / f"mqtt-{transport}", shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                           shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd")  # fmt: skip
        broker.start()
    lab = Lab(work / f"lab-{transport}").create()
    procs: list[Any] = []
    out: dict[str, Any] = {}
    try:
        dp_and_pool(custom, name, {"routerd": {"router": name, "interface": lab.host_if}})
        cd = Clusterd(kube, work / f"clusterd-{transport}", mqtt_port=broker.plain_port if broker else None,
                      identity=name, webhook=broker is None)  # fmt: skip
        procs.append(cd)
        cd.wait_ready()
        time.sleep(1.0)
        out["clusterd_rss_idle_mb"] = rss_mb(cd.proc.pid)
        out["clusterd_private_idle_mb"] = rss_mb(cd.proc.pid, "RssAnon")
        out["clusterd_idle"] = {"seconds": idle_seconds,
                                "cpu_percent": cpu_percent_over(cd.proc.pid, idle_seconds)}  # fmt: skip
        if broker is not None:
            lab.forward(broker.plain_port)
            sink: dict[str, Any] = {"mqtt_port": broker.plain_port}
        else:
            lab.forward(cd.webhook_port)
            sink = {"webhook_url": cd.webhook_url, "webhook_secret_file": cd.secret_file}
        toml = routerd_toml(lab.host_if, router_id=name, hold_down=0, stdout=False, **sink)
        procs.append(Routerd(lab, work / f"routerd-{transport}", toml))
        time.sleep(1.5)
        pool_obs = Observer(api, "cilium.io", "v2", "ciliumloadbalancerippools", name)
        dp_obs = Observer(api, "dynamic-prefix.io", "v1alpha1", "dynamicprefixes", name)

        def first_prefix() -> bool:
            dp = custom.get_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", name)
            if dp.get("status", {}).get("currentPrefix") == str(B):
                return True
            # Again until it lands (not timed): on a busy machine routerd may not listen yet.
            lab.inject_ra(flip(1)[0])
            return False

        try:
            wait_until(first_prefix, timeout=30, what="the first prefix", step=1.0)
        except TimeoutError as e:
            logs = "\n".join(f"--- {type(p).__name__}:\n{p.log()[-3000:]}" for p in procs)
            raise TimeoutError(f"{e} ({transport})\n{logs}") from None
        to_status, to_pool = [], []
        with lab.ra_sender() as sender:
            for i in range(changes):
                packet, cur = flip(i)
                want = block_start(cur)
                t0 = time.monotonic()
                sender.send(packet)
                st = dp_obs.first(lambda o, c=str(cur): o.get("status", {}).get("currentPrefix") == c, t0)
                pl = pool_obs.first(lambda o, w=want: o["spec"]["blocks"][1:2] == [{"start": w, "stop": w.replace(
                    ":0:f000::", ":0:ffff:ffff:ffff:ffff")}], t0)  # fmt: skip
                to_status.append(st - t0)
                to_pool.append(pl - t0)
        out["ra_to_status"] = summary_ms(to_status)
        out["ra_to_pool"] = summary_ms(to_pool)
        out["clusterd_rss_after_mb"] = rss_mb(cd.proc.pid)
        pool_obs.stop()
        dp_obs.stop()
    finally:
        for p in procs:
            p.stop()
        lab.destroy()
        if broker is not None:
            broker.stop()
    return out


def ra_start(work: Path, kube: KubeAPI, starts: int, settle_seconds: float = 3.0) -> dict[str, Any]:
    """clusterd alone with its RA fallback, started ``starts`` times: start -> first pool write, idle memory.

    radvd advertises A only every 60-90 s, so what arrives first is almost
    always its answer to clusterd's Router Solicitation; each start gets a
    fresh DynamicPrefix and pool, and the pool is watched from before the start.
    """
    api = kube.admin()
    custom = k8s.CustomObjectsApi(api)
    lab = Lab(work / "lab-ra").create()
    prefix_a = "2001:db8:a::/64"
    want = {"start": "2001:db8:a:0:f000::", "stop": "2001:db8:a:0:ffff:ffff:ffff:ffff"}
    first: list[float] = []
    cpu: list[float] = []
    rss: list[float] = []
    private: list[float] = []
    try:
        lab.forward(kube.port)  # clusterd runs in the lab's host namespace, the API server in the root one
        lab.start_radvd([AdvPrefix(prefix_a, valid=3600, preferred=1800)], interval=(60, 90))
        time.sleep(1.0)
        for i in range(starts):
            name = f"ra-start-{i}"
            dp_and_pool(custom, name, {"routerAdvertisement": {"interface": lab.host_if, "enabled": True}})
            obs = Observer(api, "cilium.io", "v2", "ciliumloadbalancerippools", name)
            time.sleep(0.5)  # the observer's watch is open before clusterd starts
            cd = Clusterd(kube, work / f"clusterd-ra-{i}", webhook=False, netns=lab.host, identity=name,
                          extra={"raFallback": True})  # fmt: skip
            try:
                at = obs.first(lambda o: want in o["spec"]["blocks"], cd.started_at, timeout=30)
                first.append(at - cd.started_at)
                cpu.append(cpu_seconds(cd.proc.pid))  # a little after: the write's answer is in
                time.sleep(settle_seconds)
                rss.append(rss_mb(cd.proc.pid))
                private.append(rss_mb(cd.proc.pid, "RssAnon"))
            finally:
                obs.stop()
                cd.stop()
            custom.delete_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", name)
    finally:
        lab.destroy()
    return {
        "start_to_first_pool_write": summary_ms(first),
        "start_to_first_pool_write_each_ms": [round(s * 1000) for s in first],
        "cpu_to_first_pool_write_ms": summary_ms(cpu),
        "rss_idle_mb": statistics.median(rss),
        "private_idle_mb": statistics.median(private),
    }


def compile_bytecode() -> None:
    """Compile clusterd's and routerd's bytecode (``__pycache__`` beside the sources) before any start.

    The image does so at build time (Containerfile); the test environment sets
    PYTHONDONTWRITEBYTECODE, under which every start would compile every
    module of this checkout from source (about 0.3 s of CPU at each start).
    The installed packages have theirs from pip.
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "clusterd"), str(ROOT / "routerd")],
                   check=True)  # fmt: skip


def run(work: Path, changes: int = 60, idle_seconds: float = 60.0, starts: int = 10) -> dict[str, Any]:
    compile_bytecode()
    kube = setup_kube(work)
    try:
        out = {
            transport: pipeline(work, kube, transport, changes, idle_seconds)
            for transport in ("mqtt", "webhook")
        }
        out["ra_start"] = ra_start(work, kube, starts)
        return out
    finally:
        kube.stop()
