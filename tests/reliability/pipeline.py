"""The whole pipeline for fault injection, and the invariants checked after every scenario.

radvd (router namespace) -> routerd (host namespace) -> Mosquitto (a broker
of the test's own, so it can be killed) -> clusterd -> kube-apiserver (and
Cilium's LB-IPAM where a test runs it), with a DynamicPrefix, a Cilium pool, a
MetalLB pool, a CIDR group and an HA Service that each also carry the user's
own entries. A watch records every version of the DynamicPrefix so the
invariants can look at the whole history, not just the end.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

from bench.common import open_fds, rss_mb
from routerd.cli import control_request
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import Clusterd
from tests.ground.mosquitto import Mosquitto
from tests.ground.netlab import AdvPrefix, Forwarder, Lab
from tests.ground.routerd_proc import Routerd, routerd_toml
from tests.ground.waiting import wait_until

DP = ("dynamic-prefix.io", "v1alpha1", "dynamicprefixes")
USER_V4 = {"cidr": "192.0.2.0/24"}
USER_STATIC = {"cidr": "2001:db8:ffff::/120"}
USER_CIDR = "198.51.100.0/24"
USER_SVC_IP = "192.0.2.10"
USER_DNS = "203.0.113.7"
METALLB_POOLS = ("metallb.io", "v1beta1", "apps", "ipaddresspools")
USER_MLB = "192.0.2.128/28"
IPS, DNS = "lbipam.cilium.io/ips", "external-dns.alpha.kubernetes.io/target"


def block(prefix: str) -> dict[str, str]:
    net = prefix.split("::/", maxsplit=1)[0]
    return {"start": f"{net}:0:f000::", "stop": f"{net}:0:ffff:ffff:ffff:ffff"}


@dataclass
class Advertised:
    """What the ISP said when: the ground truth for "a prefix still has valid lifetime"."""

    valid_until: dict[str, float] = field(default_factory=dict)

    def said(self, prefixes: list[AdvPrefix]) -> None:
        """Record a lower bound of each prefix's valid deadline (RFC 4862 §5.5.3 e can only keep it longer)."""
        now = time.monotonic()
        for p in prefixes:
            old = self.valid_until.get(p.prefix)
            if p.valid > 0:
                self.valid_until[p.prefix] = now + p.valid
            elif old is not None:
                self.valid_until[p.prefix] = min(old, now + 7200)

    def still_valid(self, margin: float = 2.0) -> list[str]:
        now = time.monotonic()
        return [p for p, until in self.valid_until.items() if until - margin > now]


class Pipeline:
    def __init__(self, kube: KubeAPI, lab: Lab, work: Path, *, persistence: bool = False,
                 mode: str = "ha", history: int = 10) -> None:  # fmt: skip
        self.kube, self.lab, self.work = kube, lab, work
        self.custom = k8s.CustomObjectsApi(kube.admin())
        self.core = k8s.CoreV1Api(kube.admin())
        self.broker = Mosquitto(work / "mqtt", shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                                shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd",
                                persistence=persistence)  # fmt: skip
        self.broker.start()
        self.link: Forwarder = lab.forward(self.broker.plain_port)
        self.advertised = Advertised()
        self.routerd: Routerd | None = None
        self.control = work / "routerd.sock"
        self.clusterds: list[Clusterd] = []
        self.versions: list[dict[str, Any]] = []
        self._watch = watch.Watch()
        self._create_objects(mode, history)
        threading.Thread(target=self._record, daemon=True).start()

    # -- set-up ----------------------------------------------------------------------------

    def _create_objects(self, mode: str, history: int) -> None:
        self.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="apps")))
        self.custom.create_cluster_custom_object(*DP, {
            "apiVersion": "dynamic-prefix.io/v1alpha1", "kind": "DynamicPrefix", "metadata": {"name": "home"},
            "spec": {"acquisition": {"routerd": {"router": "edge", "interface": self.lab.host_if}},
                     "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
                     "transition": {"mode": mode, "maxPrefixHistory": history}},
        })  # fmt: skip
        ann = {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/address-range": "lb"}
        self.custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
            "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "lb-pool", "annotations": ann}, "spec": {"blocks": [USER_V4, USER_STATIC]},
        })  # fmt: skip
        self.custom.create_namespaced_custom_object(*METALLB_POOLS, {
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "lb", "annotations": ann}, "spec": {"addresses": [USER_MLB]},
        })  # fmt: skip
        self.custom.create_cluster_custom_object("cilium.io", "v2", "ciliumcidrgroups", {
            "apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
            "metadata": {"name": "egress", "annotations": {"dynamic-prefix.io/name": "home"}},
            "spec": {"externalCIDRs": [USER_CIDR]},
        })  # fmt: skip
        self.core.create_namespaced_service("apps", k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name="web", annotations={
                **ann, "dynamic-prefix.io/service-address-range": "lb", IPS: USER_SVC_IP, DNS: USER_DNS}),
            spec=k8s.V1ServiceSpec(type="LoadBalancer", ip_families=["IPv4", "IPv6"],
                                   ip_family_policy="RequireDualStack", ports=[k8s.V1ServicePort(port=443)]),
        ))  # fmt: skip

    def _record(self) -> None:
        try:
            for ev in self._watch.stream(self.custom.list_cluster_custom_object, *DP):
                if ev["object"]["metadata"]["name"] == "home":
                    self.versions.append(ev["object"])
        except Exception:
            return  # the API server was stopped on purpose; restart_watch() picks up again

    def restart_watch(self) -> None:
        self._watch.stop()
        self._watch = watch.Watch()
        threading.Thread(target=self._record, daemon=True).start()

    def start_routerd(
        self,
        hold_down: float = 0.2,
        wrap: list[str] | None = None,
        allowed_routers: list[str] | None = None,
        heartbeat: float | None = None,
    ) -> Routerd:
        if self.routerd is not None:
            self.routerd.stop()
        toml = routerd_toml(self.lab.host_if, hold_down=hold_down, heartbeat=heartbeat, stdout=True,
                            mqtt_port=self.broker.plain_port, allowed_routers=allowed_routers or (),
                            control_socket=self.control)  # fmt: skip
        self.routerd = Routerd(self.lab, self.work / "routerd", toml, wrap=wrap)
        return self.routerd

    def routerd_status(self) -> dict[str, Any]:
        """The running routerd's counters and last published states, from its control socket."""
        return control_request(self.control, {"op": "status"})

    def start_clusterd(self, identity: str = "clusterd-0", webhook: bool = False, **kw: Any) -> Clusterd:
        cd = Clusterd(self.kube, self.work / identity, mqtt_port=self.broker.plain_port, identity=identity,
                      webhook=webhook, **kw)  # fmt: skip
        self.clusterds.append(cd)
        cd.wait_ready()
        return cd

    def advertise(self, prefixes: list[AdvPrefix], start: bool = False) -> None:
        self.advertised.said(prefixes)
        if start:
            self.lab.start_radvd(prefixes, interval=(3, 4))
        else:
            self.lab.advertise(prefixes, interval=(3, 4))

    # -- observations ----------------------------------------------------------------------

    def dp(self) -> dict[str, Any]:
        return dict(self.custom.get_cluster_custom_object(*DP, "home"))

    def pool(self) -> list[Any]:
        obj = self.custom.get_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", "lb-pool")
        return list(obj["spec"]["blocks"])

    def metallb_pool(self) -> list[str]:
        return list(self.custom.get_namespaced_custom_object(*METALLB_POOLS, "lb")["spec"]["addresses"])

    def wait_current(self, prefix: str, timeout: float = 60.0) -> None:
        def ok() -> bool:
            try:
                return bool(
                    self.dp().get("status", {}).get("currentPrefix") == prefix
                    and block(prefix) in self.pool()
                )
            except Exception:
                return False

        wait_until(ok, timeout, f"{prefix} current and in the pool")

    def wait_service_address(self, prefix: str, timeout: float = 30.0) -> None:
        """Wait until Service web holds an address of ``prefix`` beside the user's IPv4.

        The address comes from the real LB-IPAM (the test runs the ``cilium_operator``
        fixture); web's annotation lists the user's IPv4, so clusterd chooses the
        IPv6 address and LB-IPAM allocates what is requested.
        """
        net = IPv6Network(prefix)

        def ok() -> bool:
            svc = self.core.read_namespaced_service("web", "apps")
            ips = [i.ip for i in svc.status.load_balancer.ingress or []]
            return USER_SVC_IP in ips and any(":" in ip and IPv6Address(ip) in net for ip in ips)

        wait_until(ok, timeout, f"Service web holding {USER_SVC_IP} and an address in {prefix}")

    # -- invariants --------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """No valid block lost, users' entries untouched, no older state applied, processes healthy."""
        pool, metallb = self.pool(), self.metallb_pool()
        for prefix in self.advertised.still_valid():
            if any(v.get("status", {}).get("currentPrefix") == prefix for v in [*self.versions, self.dp()]):
                assert block(prefix) in pool, (
                    f"the pool lost {prefix}'s block while it was still valid: {pool}"
                )
                b = block(prefix)
                assert f"{b['start']}-{b['stop']}" in metallb, (
                    f"the MetalLB pool lost {prefix}'s range while it was still valid: {metallb}"
                )
        assert USER_V4 in pool and USER_STATIC in pool, f"a user's block changed: {pool}"
        assert USER_MLB in metallb, f"the user's MetalLB entry changed: {metallb}"
        group = self.custom.get_cluster_custom_object("cilium.io", "v2", "ciliumcidrgroups", "egress")
        assert USER_CIDR in group["spec"]["externalCIDRs"], "the user's CIDR changed"
        ann = self.core.read_namespaced_service("web", "apps").metadata.annotations or {}
        assert USER_SVC_IP in ann.get(IPS, "").split(","), f"the user's Service address changed: {ann}"
        assert USER_DNS in ann.get(DNS, "").split(","), f"the user's DNS target changed: {ann}"
        sequences = [
            s for v in self.versions if (s := (v.get("status", {}).get("source") or {}).get("sequence"))
        ]
        assert sequences == sorted(sequences), f"an older state was applied after a newer one: {sequences}"
        for cd in self.clusterds:
            if cd.proc.poll() is None:
                assert rss_mb(cd.proc.pid) < 250 and open_fds(cd.proc.pid) < 100, "clusterd grew unbounded"
        if self.routerd is not None and self.routerd.proc.poll() is None:
            assert rss_mb(self.routerd.proc.pid) < 60 and open_fds(self.routerd.proc.pid) < 40, "routerd grew"
        for v in self.versions:
            current = v.get("status", {}).get("currentPrefix")
            assert current is None or IPv6Network(current).prefixlen == 64

    def close(self) -> None:
        self._watch.stop()
        for cd in self.clusterds:
            cd.stop()
        if self.routerd is not None:
            self.routerd.stop()
        self.broker.stop()
