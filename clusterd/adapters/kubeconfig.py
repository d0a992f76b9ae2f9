"""Where the API server is and how clusterd proves who it is: in-cluster, a kubeconfig, or a client's.

In a pod: the service account's token, CA and the ``KUBERNETES_SERVICE_*``
address, the token re-read from its file once a minute (the kubelet rotates
it), as client-go does. Outside: a kubeconfig's current context with a
certificate, a token or a token file, read here; anything more (exec
plugins, auth providers, several kubeconfig files to merge) is handed to the
official client's loader, which then also refreshes those tokens (a client
certificate an exec plugin returns is read once, at start). The
official loader is not imported otherwise: with its dependencies it costs
about 11 MB of RSS (docs/performance.md).
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_PERIOD = 60.0
"""Seconds between reads of a token file (client-go's cachingTokenSource re-reads once a minute)."""


class NoCredentials(Exception):
    """Neither in a pod nor a usable kubeconfig: the message says what was missing."""


@dataclass
class Credentials:
    """An API server's URL, the TLS settings to reach it, and the current ``Authorization`` value."""

    server: str
    context: ssl.SSLContext
    server_hostname: str | None
    authorization: Callable[[], str | None]


class FileToken:
    """A bearer token read from a file, again at most once per ``TOKEN_PERIOD`` (rotation)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._value = ""
        self._read_at: float | None = None

    def __call__(self) -> str | None:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= TOKEN_PERIOD:
            try:
                self._value = self.path.read_text().strip()
                self._read_at = now
            except OSError:
                pass  # keep the last token; the next call tries again
        return f"Bearer {self._value}" if self._value else None


def _context(ca_file: str | None, ca_data: str | None, verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str | None, key: str | None, cert_data: bytes | None,
                key_data: bytes | None) -> None:  # fmt: skip
    """A client certificate from files, or from the kubeconfig's data (through a private file, removed at once)."""
    if cert_data is not None and key_data is not None:
        with tempfile.TemporaryDirectory(prefix="clusterd-") as d:
            c, k = Path(d, "cert"), Path(d, "key")
            c.write_bytes(cert_data)
            k.touch(0o600)
            k.write_bytes(key_data)
            ctx.load_cert_chain(str(c), str(k))
    elif cert and key:
        ctx.load_cert_chain(cert, key)


def in_cluster(
    account: Path = SERVICE_ACCOUNT, clock: Callable[[], float] = time.monotonic
) -> Credentials | None:
    """A pod's service account: the API server's Service address, its CA, the (rotated) token."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token = account / "token"
    if not host or not port or not token.exists():
        return None
    url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return Credentials(url, _context(str(account / "ca.crt"), None, True), None, FileToken(token, clock))


def from_configuration(cfg: Any) -> Credentials:
    """The settings of an official client ``Configuration`` (or ``ApiClient``), its token refresh included."""
    cfg = getattr(cfg, "configuration", cfg)
    ctx = _context(cfg.ssl_ca_cert, None, bool(cfg.verify_ssl))
    _load_chain(ctx, cfg.cert_file, cfg.key_file, None, None)
    if not cfg.assert_hostname and cfg.assert_hostname is not None:
        ctx.check_hostname = False
    return Credentials(cfg.host, ctx, getattr(cfg, "tls_server_name", None) or None,
                       lambda: cfg.get_api_key_with_prefix("authorization"))  # fmt: skip


def _named(doc: dict[str, Any], kind: str, name: str, where: Path) -> dict[str, Any]:
    for item in doc.get(kind) or []:
        if item.get("name") == name:
            return dict(item.get(kind[:-1]) or {})
    raise NoCredentials(f"{where}: no {kind[:-1]} named {name!r}")


def _data(value: str) -> bytes:
    return base64.b64decode(value)


def from_kubeconfig(path: Path) -> Credentials:
    """The current context of one kubeconfig; exec plugins and auth providers go to the official loader."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise NoCredentials(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise NoCredentials(f"{path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise NoCredentials(f"{path}: not a kubeconfig (expected a mapping at the top level)")
    current = doc.get("current-context")
    if not current:
        raise NoCredentials(f"{path}: no current-context")
    context = _named(doc, "contexts", current, path)
    cluster = _named(doc, "clusters", context.get("cluster", ""), path)
    user = _named(doc, "users", context.get("user", ""), path) if context.get("user") else {}
    if cluster.get("proxy-url"):
        raise NoCredentials(f"{path}: clusterd connects to the API server directly, not through proxy-url")
    if "exec" in user or "auth-provider" in user or "username" in user:
        return official(path)
    if not cluster.get("server"):
        raise NoCredentials(f"{path}: cluster {context.get('cluster')!r} has no server")

    def rel(p: str | None) -> str | None:  # kubeconfig paths are relative to the file
        return str(path.parent / p) if p else None

    ca_data = cluster.get("certificate-authority-data")
    ctx = _context(rel(cluster.get("certificate-authority")), _data(ca_data).decode() if ca_data else None,
                   not cluster.get("insecure-skip-tls-verify", False))  # fmt: skip
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    _load_chain(ctx, rel(user.get("client-certificate")), rel(user.get("client-key")),
                _data(cert_data) if cert_data else None, _data(key_data) if key_data else None)  # fmt: skip
    authorization: Callable[[], str | None]
    if user.get("token"):
        bearer = f"Bearer {user['token']}"
        authorization = lambda: bearer  # noqa: E731
    elif user.get("tokenFile"):
        authorization = FileToken(Path(rel(user["tokenFile"]) or ""))
    else:
        authorization = lambda: None  # noqa: E731
    return Credentials(cluster["server"], ctx, cluster.get("tls-server-name"), authorization)


def official(path: Path | None) -> Credentials:
    """The official client's kubeconfig loader: exec plugins, auth providers, merged files."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    cfg = k8s.Configuration()
    try:
        k8s_config.load_kube_config(config_file=str(path) if path else None, client_configuration=cfg)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException as e:
        raise NoCredentials(str(e)) from None
    return from_configuration(cfg)


def load(kubeconfig: Path | None) -> Credentials:
    """In-cluster credentials when running in a pod, else a kubeconfig (``KUBECONFIG``, ~/.kube/config)."""
    if kubeconfig is None:
        if (found := in_cluster()) is not None:
            return found
        env = os.environ.get("KUBECONFIG", "")
        paths = [p for p in env.split(os.pathsep) if p]
        if len(paths) > 1:
            return official(None)  # several files are merged: the official loader knows the rules
        kubeconfig = Path(paths[0]) if paths else Path.home() / ".kube" / "config"
        if not kubeconfig.exists():
            raise NoCredentials(f"not in a pod and no kubeconfig at {kubeconfig}")
    return from_kubeconfig(kubeconfig)
