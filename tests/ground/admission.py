"""A validating admission webhook that holds one chosen write: a fault placed at that write, not left to chance.

The API server calls the webhook before it stores an object. When the request
``hold`` picks arrives, the webhook keeps it unanswered and sets ``held``: the
write is under way and nothing of it is stored, so a test can stop the API
server right there, in the middle of a change clusterd makes in several writes.
Every other request is allowed at once; the webhook never changes or refuses
an object. ``failurePolicy: Ignore`` and the test label (``clean_state``
deletes the configuration) keep a failed test from blocking later ones.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.ground.apiserver import TEST_LABEL, KubeAPI
from tests.ground.waiting import wait_until

CONFIGS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
NAME = "dynamic-prefix-test-hold"


class HoldingWebhook:
    """Holds the first request ``hold`` picks until :meth:`release`; see the module's docstring."""

    def __init__(self, kube: KubeAPI, rule: dict[str, Any], hold: Callable[[dict[str, Any]], bool]) -> None:
        self.kube, self.rule, self.hold = kube, rule, hold
        self.held = threading.Event()
        self.request: dict[str, Any] | None = None
        """The held AdmissionReview request (its object, operation, user)."""
        self.seen = 0
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        kube.ca.issue_cert("127.0.0.1").configure_cert(ctx)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["request"]
                hook.seen += 1
                if not hook.held.is_set() and hook.hold(req):
                    hook.request = req
                    hook.held.set()
                    hook._release.wait(60)
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": {"uid": req["uid"], "allowed": True}}).encode()  # fmt: skip
                with contextlib.suppress(OSError):  # the API server may be gone by now
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def release(self) -> None:
        """Answer the held request (allowed), and every later one at once."""
        self._release.set()

    @contextlib.contextmanager
    def installed(self, probe: Callable[[], object]) -> Iterator[HoldingWebhook]:
        """Serve, register, and wait until the API server calls it (``probe`` makes a dry-run request
        the rule matches); unregister and stop after (the registration is left to ``clean_state`` when
        the API server is down then)."""
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        ca = base64.b64encode(self.kube.ca.cert_pem.bytes()).decode()
        port = self._server.server_address[1]
        code, got = self.kube.request("POST", CONFIGS, {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": NAME, "labels": {TEST_LABEL: "true"}},
            "webhooks": [{"name": "hold.dynamic-prefix.test", "rules": [self.rule],
                          "clientConfig": {"url": f"https://127.0.0.1:{port}/validate", "caBundle": ca},
                          "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 30,
                          "admissionReviewVersions": ["v1"]}],
        })  # fmt: skip
        assert code == 201, got
        try:
            # The API server picks the configuration up a moment later: call until it reaches the webhook.
            def called() -> bool:
                probe()
                return self.seen > 0

            wait_until(called, 30, "the API server calling the webhook", step=0.5)
            yield self
        finally:
            self.release()
            if self.kube.running:
                self.kube.request("DELETE", f"{CONFIGS}/{NAME}")
            self._server.shutdown()
            self._server.server_close()
