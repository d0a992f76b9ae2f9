"""clusterd's Kubernetes adapter against the real API server: watches that cannot freeze, Events as series.

A TCP relay between clusterd and the API server stops forwarding on every
connection it holds without closing any (what a dropped NAT or conntrack
entry, or a peer that vanished, looks like: a half-open connection); clusterd
must notice within its apiTimeout and carry on over new connections. And an
Event recorded again and again is one events.k8s.io Event whose series
counts the repeats.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.clusterd.test_clusterd import V4, A, block, create_dp, create_pool, get_pool
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import WEBHOOK_SECRET
from tests.ground.messages import post_state, prefix, state
from tests.ground.waiting import wait_until

pytestmark = [pytest.mark.apiserver]


class FreezingRelay:
    """Relay TCP to the API server; ``freeze()`` silences every connection open at that moment.

    A frozen connection stays open at both ends but nothing more crosses it in
    either direction; connections made later are relayed as usual.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inner, _ = self._listener.accept()
                outer = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                if self._closed.is_set():
                    return
                continue
            outer.settimeout(None)
            frozen = threading.Event()
            with self._lock:
                self._conns.append((inner, outer, frozen))
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(a, b, frozen), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, frozen: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while (data := src.recv(65536)) and not frozen.is_set():
                dst.sendall(data)
            if frozen.is_set():
                self._closed.wait()  # hold both ends open, forward nothing
                return
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> int:
        """Silence the connections open now; how many there were."""
        with self._lock:
            for _, _, frozen in self._conns:
                frozen.set()
            return len(self._conns)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for inner, outer, _ in self._conns:
                inner.close()
                outer.close()


def test_a_silently_dead_connection_is_noticed_and_clusterd_carries_on(
    cluster: KubeAPI, clusterd_factory: Any, tmp_path: Path
) -> None:
    relay = FreezingRelay(cluster.port)
    try:
        kubeconfig = cluster.kubeconfig(tmp_path / "relayed-kubeconfig")
        doc = yaml.safe_load(kubeconfig.read_text())
        doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
        kubeconfig.write_text(yaml.safe_dump(doc))
        create_dp(cluster, router="edge")
        create_pool(cluster, "lb-pool", [V4])
        api_timeout = 2
        cd = clusterd_factory(extra={"kubeconfig": str(kubeconfig), "apiTimeout": api_timeout})
        cd.wait_ready()
        assert post_state(cd.webhook_url, WEBHOOK_SECRET, state("edge", "br-lan", 1, prefix(A)))[0] == 200
        wait_until(
            lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(A)], what="A in lb-pool"
        )
        assert relay.freeze() >= 4  # the watches (CRDs, DynamicPrefixes, Services, pools) at least
        frozen_at = time.monotonic()
        # Only the pool watch can bring this pool: it must be noticed dead and started again.
        create_pool(cluster, "late-pool", [V4])
        # Bound: the silent watch is noticed after apiTimeout plus its margin (3 s here); writes on
        # frozen kept-alive connections each fail after apiTimeout and are retried.
        wait_until(lambda: get_pool(cluster, "late-pool")["spec"]["blocks"] == [V4, block(A)], timeout=30,
                   what="the pool created after the freeze to get A")  # fmt: skip
        print(f"the new pool got its block {time.monotonic() - frozen_at:.1f} s after the freeze")
        assert "nothing received for" in cd.log()
    finally:
        relay.close()


def test_a_repeated_event_is_one_event_whose_series_counts_the_repeats(cluster: KubeAPI) -> None:
    import asyncio

    from clusterd.adapters.kube import Kube, Ref

    uid = str(uuid.uuid4())
    ref = Ref("dynamic-prefix.io/v1alpha1", "DynamicPrefix", "flapping", None, uid)
    n, who = 5, "dynamic-prefix-clusterd"

    async def record() -> None:
        kube = Kube(cluster.admin())
        try:
            for _ in range(n):
                await kube.event(ref, "Warning", "NotSynced", "lb-pool: no range named lb", who)
            await kube.event(ref, "Normal", "PrefixChanged", "current prefix 2001:db8:a::/64", who)
        finally:
            kube.close()

    asyncio.run(record())
    api = cluster.admin()
    # Read as JSON: the client's models refuse some valid Events (core/v1 ones seen through events.k8s.io).
    raw = k8s.EventsV1Api(api).list_namespaced_event("default", _preload_content=False)
    ours = [e for e in json.loads(raw.data)["items"] if e["regarding"].get("uid") == uid]
    by_reason = {e["reason"]: e for e in ours}
    assert sorted(e["reason"] for e in ours) == ["NotSynced", "PrefixChanged"], [e["reason"] for e in ours]
    assert by_reason["NotSynced"].get("series", {}).get("count") == n, by_reason["NotSynced"]
    assert "series" not in by_reason["PrefixChanged"]  # once: no series
    # The core/v1 view (what kubectl describe and the other tests read) shows the same one Event.
    core = k8s.CoreV1Api(api).list_namespaced_event("default").items
    assert sorted(e.reason for e in core if e.involved_object.uid == uid) == ["NotSynced", "PrefixChanged"]


def test_in_cluster_credentials_verify_the_server_and_follow_a_rotated_token(
    cluster: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod's token file is re-read once a minute (the kubelet rotates it); the CA is checked."""
    import asyncio

    import trustme

    from clusterd.adapters import kubeconfig
    from clusterd.adapters.kube import ApiError, Kube, Unreachable

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(cluster.ca_file.read_bytes())
    (account / "token").write_text(cluster.service_account_token("dynamic-prefix", "rotating"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.port))
    now = [0.0]

    async def status_of_a_read(creds: kubeconfig.Credentials) -> int | str:
        kube = Kube(creds)
        try:
            await kube.get_lease("dynamic-prefix", "any", 10)
            return 200
        except Unreachable as e:
            return str(e)
        except ApiError as e:
            return e.status
        finally:
            kube.close()

    creds = kubeconfig.in_cluster(account, clock=lambda: now[0])
    assert creds is not None
    assert (
        asyncio.run(status_of_a_read(creds)) == 403
    )  # authenticated as the account, which may read no Lease
    (account / "token").write_text("rotated-but-not-valid")
    now[0] = kubeconfig.TOKEN_PERIOD - 1
    assert asyncio.run(status_of_a_read(creds)) == 403  # not re-read within the period
    now[0] = kubeconfig.TOKEN_PERIOD
    assert asyncio.run(status_of_a_read(creds)) == 401  # re-read: the new (invalid) token is sent

    trustme.CA().cert_pem.write_to_path(str(account / "ca.crt"))  # a CA that did not sign the server's cert
    got = asyncio.run(status_of_a_read(kubeconfig.in_cluster(account)))  # type: ignore[arg-type]
    assert isinstance(got, str) and "CERTIFICATE_VERIFY_FAILED" in got, got
