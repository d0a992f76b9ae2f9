"""A real kube-apiserver and etcd on loopback, started the way envtest does.

etcd runs with ``--unsafe-no-fsync`` on a free port; kube-apiserver serves TLS
with a certificate from a throw-away CA, authenticates an admin by client
certificate (``system:masters``) and ServiceAccounts by signed tokens, and
authorizes with RBAC. There is no controller-manager, scheduler or kubelet:
nothing garbage-collects, finalizes namespaces or runs pods (``clean_state``
does the namespace part itself).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client as k8s

from tests.ground import testbin
from tests.ground.ports import free_port

BASE_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
TEST_LABEL = "dynamic-prefix.io/test"
# Requests made as a ServiceAccount (clusterd under the chart's RBAC) are audited; nothing else is.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}],
}  # fmt: skip


@dataclass
class KubeAPI:
    """One etcd + kube-apiserver pair. ``stop()``/``start()`` keep data and ports."""

    workdir: Path
    etcd_bin: Path
    apiserver_bin: Path
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    port: int = field(default_factory=free_port)
    base_crds: list[dict[str, Any]] = field(default_factory=list)
    base_crd_versions: dict[str, str] = field(default_factory=dict)
    _etcd: subprocess.Popen[bytes] | None = None
    _apiserver: subprocess.Popen[bytes] | None = None
    _local: threading.local = field(default_factory=threading.local)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.audit_policy = self.workdir / "audit-policy.yaml"
        self.audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self.audit_log = self.workdir / "audit.log"
        self.ca = trustme.CA(organization_name="dynamic-prefix test CA")
        self.ca_file = self.workdir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        serving = self.ca.issue_cert("127.0.0.1", "localhost", "kubernetes.default.svc")
        self.serving_cert = self.workdir / "serving.pem"
        self.serving_key = self.workdir / "serving-key.pem"
        serving.cert_chain_pems[0].write_to_path(str(self.serving_cert))
        serving.private_key_pem.write_to_path(str(self.serving_key))
        admin = self.ca.issue_cert(
            "admin.dynamic-prefix.test", common_name="admin", organization_name="system:masters"
        )
        self.admin_cert = self.workdir / "admin.pem"
        self.admin_key = self.workdir / "admin-key.pem"
        admin.cert_chain_pems[0].write_to_path(str(self.admin_cert))
        admin.private_key_pem.write_to_path(str(self.admin_key))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = self.workdir / "sa.key"
        self.sa_pub = self.workdir / "sa.pub"
        self.sa_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.sa_pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._apiserver is not None and self._apiserver.poll() is None

    @property
    def version(self) -> str:
        out = subprocess.run(
            [str(self.apiserver_bin), "--version"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def start(self, timeout: float = 120.0) -> None:
        """Start etcd, then kube-apiserver, and wait for ``/readyz``."""
        self._start_etcd()
        log = open(self.workdir / "kube-apiserver.log", "ab")  # noqa: SIM115 - closed with the process
        self._apiserver = subprocess.Popen(
            [
                str(self.apiserver_bin),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--tls-cert-file={self.serving_cert}",
                f"--tls-private-key-file={self.serving_key}",
                f"--client-ca-file={self.ca_file}",
                f"--secure-port={self.port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.96.0.0/24,fd00:10:96::/112",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.sa_pub}",
                f"--service-account-signing-key-file={self.sa_key}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--audit-policy-file={self.audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",  # an answered request is in the log
                "--v=1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._apiserver.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                if self.get_raw("/readyz") == b"ok":
                    return
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s:\n{self.log_tail()}")

    def _start_etcd(self) -> None:
        log = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 - closed with the process
        self._etcd = subprocess.Popen(
            [
                str(self.etcd_bin),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop kube-apiserver, then etcd (data stays for a later ``start``)."""
        for proc in (self._apiserver, self._etcd):
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._apiserver = self._etcd = None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """A hung API server: kube-apiserver SIGSTOPped, so connections open but no answer comes."""
        assert self._apiserver is not None
        self._apiserver.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._apiserver.send_signal(signal.SIGCONT)

    def audit_offset(self) -> int:
        """Where the audit log ends now: pass it to :meth:`refused` to see only later requests."""
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def refused(self, since: int, username: str) -> list[dict[str, Any]]:
        """The requests ``username`` made after ``since`` that RBAC refused (403), from the audit log."""
        with open(self.audit_log, "rb") as f:
            f.seek(since)
            events = [json.loads(line) for line in f.read().splitlines() if line.strip()]
        return [e for e in events if e["user"]["username"] == username
                and e.get("responseStatus", {}).get("code") == 403]  # fmt: skip

    def etcd_versions(self, prefix: str) -> dict[str, int]:
        """etcd's ``version`` of each key under ``prefix``, by the key's last part: how often the object
        was written since it was created (1: created, never changed). Unlike a watch it survives a
        restart of the API server, whose watch cache starts afresh."""
        start = prefix.encode()
        end = start[:-1] + bytes([start[-1] + 1])
        body = {"key": base64.b64encode(start).decode(), "range_end": base64.b64encode(end).decode(),
                "keys_only": True}  # fmt: skip
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.etcd_port}/v3/kv/range", json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - as above
            kvs = json.loads(resp.read()).get("kvs") or []
        return {base64.b64decode(kv["key"]).decode().rsplit("/", 1)[1]: int(kv["version"]) for kv in kvs}

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / "kube-apiserver.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- clients -------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return ctx

    def get_raw(self, path: str) -> bytes:
        """GET ``path`` as admin with the standard library (used before the client exists)."""
        with urllib.request.urlopen(  # noqa: S310 - https URL built from our own port
            self.url + path, context=self._ssl_context(), timeout=5
        ) as resp:
            return bytes(resp.read())

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A raw admin request: (HTTP status, decoded JSON body).

        Independent of the Python client's version, for the test ground's own
        housekeeping (discovery, deletecollection) and for asserting raw codes.
        One kept-alive connection per thread: the per-test clean-up makes a few
        hundred requests, and a TLS handshake each cost seconds on a busy machine.
        """
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue  # the server closed the idle connection (or restarted): once more, fresh
            try:
                return resp.status, json.loads(raw or b"null")
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None or conn.port != self.port:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self._ssl_context(), timeout=30
            )
            self._local.conn = conn
        return conn

    def configuration(self, token: str | None = None) -> k8s.Configuration:
        """A client configuration: admin by certificate, or a bearer ``token``."""
        cfg = k8s.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca_file)
        cfg.verify_ssl = True
        if token is None:
            cfg.cert_file = str(self.admin_cert)
            cfg.key_file = str(self.admin_key)
        else:
            cfg.api_key = {"authorization": token}
            cfg.api_key_prefix = {"authorization": "Bearer"}
        return cfg

    def admin(self) -> k8s.ApiClient:
        return k8s.ApiClient(self.configuration())

    def kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """Write a kubeconfig for programs (clusterd, helm) run as subprocesses."""
        user: dict[str, str] = (
            {"client-certificate": str(self.admin_cert), "client-key": str(self.admin_key)}
            if token is None
            else {"token": token}
        )
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def service_account_token(self, namespace: str, name: str) -> str:
        """Create the ServiceAccount if needed and mint a token for it (TokenRequest)."""
        core = k8s.CoreV1Api(self.admin())
        with contextlib.suppress(k8s.ApiException):
            core.create_namespaced_service_account(
                namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
            )
        req = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        resp = core.create_namespaced_service_account_token(name, namespace, req)
        return str(resp.status.token)

    def client_as(self, namespace: str, service_account: str) -> k8s.ApiClient:
        """A client that has exactly the RBAC rights of that ServiceAccount."""
        return k8s.ApiClient(self.configuration(self.service_account_token(namespace, service_account)))


# -- CRDs ------------------------------------------------------------------------------


def load_yaml_docs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    # libyaml's loader: Cilium's CRDs are 1.3 MB of YAML, ~20 s for the pure-Python one.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs: list[dict[str, Any]] = []
    for p in paths:
        docs.extend(d for d in yaml.load_all(p.read_text(), Loader=loader) if d)
    return docs


CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def apply_crds(api: KubeAPI, crds: Iterable[dict[str, Any]], timeout: float = 30.0) -> None:
    """Create or replace CRDs, then wait until each is Established and served."""
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        names.append(name)
        code, current = api.request("GET", f"{CRD_PATH}/{name}")
        if code == 404:
            code, got = api.request("POST", CRD_PATH, crd)
        else:
            body = {
                **crd,
                "metadata": {
                    **crd["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                },
            }
            code, got = api.request("PUT", f"{CRD_PATH}/{name}", body)
        if code >= 300:
            raise RuntimeError(f"CRD {name}: HTTP {code}: {got}")
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            _, got = api.request("GET", f"{CRD_PATH}/{name}")
            # Until the API server's controller first writes it, the status may hold "conditions": null.
            conds = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []}
            if conds.get("Established") == "True" and conds.get("NamesAccepted") == "True":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established: {conds}")
            time.sleep(0.1)
        # Established can come a moment before the resource is served.
        spec = got["spec"]
        for v in spec["versions"]:
            if not v["served"]:
                continue
            while (
                api.request("GET", f"/apis/{spec['group']}/{v['name']}/{spec['names']['plural']}")[0] == 404
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} version {v['name']} not served")
                time.sleep(0.1)


def delete_crd(api: KubeAPI, name: str, timeout: float = 60.0) -> None:
    """Delete a CRD and wait until it is gone (its objects go with it)."""
    code, body = api.request("DELETE", f"{CRD_PATH}/{name}")
    if code == 404:
        return
    if code >= 300:
        raise RuntimeError(f"delete CRD {name}: HTTP {code}: {body}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.request("GET", f"{CRD_PATH}/{name}")[0] == 404:
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} still present after {timeout}s")


# -- per-test clean state ----------------------------------------------------------------


def _resources(api: KubeAPI) -> Iterator[tuple[str, str, bool]]:
    """Yield (group/version path, plural, namespaced) for every deletable resource.

    Every version of a group, not just the preferred one: a group's kinds may be
    served at different versions (MetalLB's preferred v1beta2 has only BGPPeer;
    its IPAddressPool is v1beta1). Each (group, plural) is yielded once.
    """
    paths = ["/api/v1"]
    _, groups = api.request("GET", "/apis")
    for g in groups["groups"]:
        preferred = g["preferredVersion"]["groupVersion"]
        others = [v["groupVersion"] for v in g["versions"] if v["groupVersion"] != preferred]
        paths += ["/apis/" + gv for gv in [preferred, *others]]
    seen: set[tuple[str, str]] = set()
    for path in paths:
        code, doc = api.request("GET", path)
        if code != 200:
            continue  # a group that vanished between the two calls (a CRD being deleted)
        group = path.rsplit("/", 1)[0]
        for r in doc["resources"]:
            if "/" in r["name"] or "deletecollection" not in r.get("verbs", []) or (group, r["name"]) in seen:
                continue
            seen.add((group, r["name"]))
            yield path, r["name"], bool(r["namespaced"])


def crd_versions(api: KubeAPI) -> dict[str, str]:
    """Every CRD's resourceVersion, by name (one request)."""
    _, crds = api.request("GET", CRD_PATH)
    return {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in crds["items"]}


def install_base_crds(api: KubeAPI, crds: list[dict[str, Any]]) -> None:
    """Apply the session's CRDs and remember them, so ``clean_state`` can restore them."""
    apply_crds(api, crds)
    api.base_crds = crds
    api.base_crd_versions = crd_versions(api)


def clean_state(api: KubeAPI) -> None:
    """Return the cluster to its state at session start.

    Deletes every custom object, every test namespace (its objects first, then
    the namespace, finalized by hand since no namespace controller runs), every
    object labelled ``dynamic-prefix.io/test`` and any CRD a test added; puts
    back a base CRD a test replaced or deleted (the v2alpha1-only Cilium variant).
    """
    base = {d["metadata"]["name"] for d in api.base_crds}
    _, crds = api.request("GET", CRD_PATH)
    for crd in crds["items"]:
        if crd["metadata"]["name"] not in base:
            delete_crd(api, crd["metadata"]["name"])
    custom_groups = {c["spec"]["group"] for c in crds["items"]}
    _, nslist = api.request("GET", "/api/v1/namespaces")
    namespaces = [
        n["metadata"]["name"] for n in nslist["items"] if n["metadata"]["name"] not in BASE_NAMESPACES
    ]
    labelled = f"?labelSelector={TEST_LABEL}"
    for path, plural, namespaced in _resources(api):
        if plural == "namespaces":
            continue
        if path.startswith("/apis/") and path[6:].rsplit("/", 1)[0] in custom_groups:
            _delete_custom_objects(api, path, plural, namespaced)
            continue
        if namespaced:
            targets = [f"{path}/namespaces/{ns}/{plural}" for ns in namespaces]
            everything = plural == "events"  # Events are the tests' own exhaust
            targets += [
                f"{path}/namespaces/{ns}/{plural}" + ("" if everything else labelled)
                for ns in sorted(BASE_NAMESPACES)
            ]
        else:
            targets = [f"{path}/{plural}{labelled}"]
        for t in targets:
            api.request("DELETE", t)
    for ns in namespaces:
        api.request("DELETE", f"/api/v1/namespaces/{ns}")
        api.request(
            "PUT",
            f"/api/v1/namespaces/{ns}/finalize",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns},
                "spec": {"finalizers": []},
            },
        )
    current = crd_versions(api)
    known = api.base_crd_versions
    changed = [
        d for d in api.base_crds if current.get(d["metadata"]["name"]) != known.get(d["metadata"]["name"])
    ]
    if changed:
        apply_crds(api, changed)
        api.base_crd_versions = crd_versions(api)


def _delete_custom_objects(api: KubeAPI, path: str, plural: str, namespaced: bool) -> None:
    """Delete every object of one custom resource: one list, then a deletecollection where any are.

    There are dozens of Cilium and MetalLB kinds and nearly all are empty, so
    listing first keeps the per-test clean-up to about one request per kind.
    """
    code, found = api.request("GET", f"{path}/{plural}")
    if code != 200 or not found["items"]:
        return
    if not namespaced:
        api.request("DELETE", f"{path}/{plural}")
        return
    for ns in sorted({o["metadata"]["namespace"] for o in found["items"]}):
        api.request("DELETE", f"{path}/namespaces/{ns}/{plural}")


def start_session_apiserver(workdir: Path) -> KubeAPI:
    """Find (or build) the binaries and start a KubeAPI; the caller stops it."""
    etcd = testbin.find("etcd") or testbin.build("etcd")
    apiserver = testbin.find("kube-apiserver") or testbin.build("kube-apiserver")
    api = KubeAPI(workdir=workdir, etcd_bin=etcd, apiserver_bin=apiserver)
    try:
        api.start()
    except BaseException:  # not ready, or interrupted (Ctrl-C, SIGTERM): leave no etcd behind
        api.stop()
        raise
    return api


def env_without_proxy() -> dict[str, str]:
    """Environment for subprocesses: loopback must never go through a proxy."""
    env = dict(os.environ)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    return env
