"""The real load-balancer IPAMs against the test apiserver: Cilium's LB-IPAM and MetalLB's controller.

Neither needs a datapath. Cilium's LB-IPAM runs inside cilium-operator, which
here gets only the API server and Cilium's CRDs: no nodes, no kvstore, no
cloud (the ``generic`` build has no cloud IPAM providers), and every part that
touches nodes or a datapath switched off. MetalLB's controller (not the
speaker) assigns addresses from ``IPAddressPool`` objects with only the API
server and its CRDs; its webhook and certificate rotation are off.

Each instance is started per test and stopped when the test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

from kubernetes import client as k8s
from kubernetes import watch

from tests.ground.apiserver import TEST_LABEL, KubeAPI, env_without_proxy
from tests.ground.ports import free_port
from tests.ground.waiting import wait_until

CILIUM_NAMESPACE = (
    "cilium"  # the operator's leader-election Lease; a test namespace, so cleaned after each test
)
METALLB_NAMESPACE = "metallb-system"  # MetalLB reads its pools from its own namespace only


class _Process:
    """A controller process whose output goes to ``<workdir>/<name>.log``."""

    def __init__(self, name: str, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )

    def start(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def started(self) -> Iterator[Self]:
        """Started for the ``with`` block, stopped after it, whatever happens inside."""
        try:
            self.start()
            yield self
        finally:
            self.stop()

    @property
    def pid(self) -> int | None:
        """The controller's own PID (``unshare`` and ``sh`` exec into it)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (Cilium releases its Lease on it), SIGKILL after 15 s."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self._proc.returncode}):\n{self.log()[-4000:]}")

    def _wait_probe(
        self, timeout: float, what: str, reconciled: Callable[[], bool], delete: Callable[[], object]
    ) -> None:
        """Wait until the controller has reconciled a probe object the caller created; delete it."""

        def ok() -> bool:
            self._check_alive()
            return reconciled()

        try:
            wait_until(ok, timeout, what, step=0.1)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; {self.name}'s log ends:\n{self.log()[-4000:]}") from None
        finally:
            with contextlib.suppress(k8s.ApiException):
                delete()


class CiliumOperator(_Process):
    """cilium-operator with LB-IPAM on, in a mount namespace of its own.

    The operator creates ``/var/run/cilium/shell.sock`` whatever its flags say;
    ``unshare -m`` gives it a private tmpfs on ``/run``, so parallel instances
    (and the host) never see each other's socket and nothing is left behind.
    """

    def __init__(self, kube: KubeAPI, binary: Path, workdir: Path) -> None:
        super().__init__("cilium-operator", workdir)
        self.kube = kube
        self.api_port = free_port()
        kubeconfig = kube.kubeconfig(workdir / "kubeconfig")
        self.argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m,mode=0755 cilium-run /run && exec "$0" "$@"',
            str(binary),
            *self.flags(kubeconfig, self.api_port),
        ]

    @staticmethod
    def flags(kubeconfig: Path, api_port: int) -> list[str]:
        """The operator's command line (docs/testing.md lists what each turns off)."""
        return [
            f"--k8s-kubeconfig-path={kubeconfig}",
            f"--k8s-namespace={CILIUM_NAMESPACE}",
            f"--operator-api-serve-addr=127.0.0.1:{api_port}",
            "--enable-lb-ipam=true",
            "--default-lb-service-ipam=lbipam",
            "--identity-allocation-mode=crd",
            "--ipam=kubernetes",
            "--skip-crd-creation",
            "--enable-gops=false",
            "--enable-metrics=false",
            "--remove-cilium-node-taints=false",
            "--set-cilium-is-up-condition=false",
            "--set-cilium-node-taints=false",
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until LB-IPAM has reconciled a probe pool (it is leading and synced)."""
        core = k8s.CoreV1Api(self.kube.admin())
        with contextlib.suppress(k8s.ApiException):  # a restart within a test: it exists already
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=CILIUM_NAMESPACE)))
        self._spawn(self.argv, env_without_proxy())
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        api = k8s.CustomObjectsApi(self.kube.admin())
        name = f"probe-{self.api_port}"
        pools = ("cilium.io", "v2", "ciliumloadbalancerippools")
        api.create_cluster_custom_object(*pools, {
            "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": name, "labels": {TEST_LABEL: "probe"}},
            # Selects no Service, holds no address a test uses.
            "spec": {"blocks": [{"cidr": "198.18.0.0/32"}],
                     "serviceSelector": {"matchLabels": {TEST_LABEL: name}}},
        })  # fmt: skip
        self._wait_probe(
            timeout,
            "LB-IPAM reconciling a probe pool",
            lambda: bool(api.get_cluster_custom_object(*pools, name).get("status", {}).get("conditions")),
            lambda: api.delete_cluster_custom_object(*pools, name),
        )


class MetallbController(_Process):
    """MetalLB's controller: webhook and certificate rotation off, pools read from ``metallb-system``."""

    def __init__(self, kube: KubeAPI, binary: Path, workdir: Path) -> None:
        super().__init__("metallb-controller", workdir)
        self.kube = kube
        self.kubeconfig = kube.kubeconfig(workdir / "kubeconfig")
        self.metrics_port = free_port()
        self.argv = [str(binary), *self.flags(self.metrics_port)]

    @staticmethod
    def flags(metrics_port: int) -> list[str]:
        """The controller's command line (docs/testing.md lists what each turns off)."""
        return [
            f"-namespace={METALLB_NAMESPACE}",
            f"-port={metrics_port}",
            "-disable-cert-rotation",
            "-webhook-mode=disabled",
            "-log-level=debug",
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until it has reconciled a probe pool's status (it is synced)."""
        core = k8s.CoreV1Api(self.kube.admin())
        with contextlib.suppress(k8s.ApiException):
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=METALLB_NAMESPACE)))
        # controller-runtime reads KUBECONFIG; metrics on loopback only.
        self._spawn(self.argv, {**env_without_proxy(), "KUBECONFIG": str(self.kubeconfig)})
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        api = k8s.CustomObjectsApi(self.kube.admin())
        name = f"probe-{self.metrics_port}"
        pools = ("metallb.io", "v1beta1", METALLB_NAMESPACE, "ipaddresspools")
        api.create_namespaced_custom_object(*pools, {
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": METALLB_NAMESPACE},
            # Assigns nothing: no Service asks for it and auto-assignment is off.
            "spec": {"addresses": ["198.18.0.0/32"], "autoAssign": False},
        })  # fmt: skip
        self._wait_probe(
            timeout,
            "MetalLB reconciling a probe pool",
            lambda: "availableIPv4" in api.get_namespaced_custom_object(*pools, name).get("status", {}),
            lambda: api.delete_namespaced_custom_object(*pools, name),
        )


class IngressLog:
    """Every ``status.loadBalancer.ingress`` each Service in a namespace was seen with, from a watch.

    The IPAM writes status asynchronously; recording every version (not just
    the latest) lets a test tell "kept its address" from "lost it and got it
    back", which a poll could miss.
    """

    def __init__(self, kube: KubeAPI, namespace: str) -> None:
        self.core = k8s.CoreV1Api(kube.admin())
        self.namespace = namespace
        self.seen: dict[str, list[tuple[float, tuple[str, ...]]]] = {}
        self._lock = threading.Lock()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # stop() ends the stream
            for ev in self._watch.stream(self.core.list_namespaced_service, self.namespace):
                svc = ev["object"]
                ips = tuple(i.ip for i in (svc.status.load_balancer.ingress or []) if i.ip)
                with self._lock:
                    history = self.seen.setdefault(svc.metadata.name, [])
                    if not history or history[-1][1] != ips:
                        history.append((time.monotonic(), ips))

    def history(self, name: str) -> list[tuple[str, ...]]:
        """The distinct address sets the Service went through since it first had one, oldest first.

        A gap later on (no address at all) shows as ``()``.
        """
        with self._lock:
            sets = [ips for _t, ips in self.seen.get(name, [])]
        while sets and not sets[0]:
            sets.pop(0)
        return sets

    def current(self, name: str) -> tuple[str, ...]:
        with self._lock:
            h = self.seen.get(name, [])
            return h[-1][1] if h else ()

    def wait(
        self, name: str, check: Callable[[tuple[str, ...]], bool], what: str, timeout: float = 30.0
    ) -> tuple[str, ...]:
        """Wait until the Service's addresses pass ``check``; return them."""
        try:
            wait_until(lambda: check(self.current(name)), timeout, f"{name}: {what}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; its addresses went {self.history(name)}") from None
        return self.current(name)

    def first_seen(self, name: str, address: str) -> float:
        """When (``time.monotonic()``) the watch first saw the Service holding ``address``."""
        with self._lock:
            return next(t for t, ips in self.seen.get(name, []) if address in ips)

    def held_throughout(self, name: str, address: str) -> bool:
        """The Service held ``address`` in every version since it first got it."""
        h = self.history(name)
        first = next((i for i, ips in enumerate(h) if address in ips), None)
        return first is not None and all(address in ips for ips in h[first:])

    def stop(self) -> None:
        self._watch.stop()
