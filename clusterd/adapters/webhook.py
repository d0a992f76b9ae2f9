"""The webhook receiver (aiohttp): routerd's signed POSTs, checked before anything is applied.

Order of checks: body size (413), signature and timestamp window (401),
replay (409), JSON and schema (400), policy (422: a unique-local prefix when
ULA is not allowed). Only then is the report handed to the controller, whose
answer (200 applied, 202 nobody uses it, 409 out of order, 503 retry) goes
back to routerd, which retries only 5xx. Every refusal says what was wrong.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from clusterd.clock import utcnow
from clusterd.config import WebhookSection
from clusterd.core import auth
from clusterd.core.status import Report
from clusterd.metrics import Metrics
from routerd.core.tracker import UNIQUE_LOCAL
from routerd.core.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER, WireError, decode
from routerd.logs import RateLimited, kv

LOG = logging.getLogger("clusterd.webhook")


class WebhookServer:
    def __init__(
        self,
        cfg: WebhookSection,
        secrets: list[bytes],
        submit: Callable[[Report], Awaitable[tuple[int, str]]],
        metrics: Metrics,
        allow_ula: bool,
    ) -> None:
        self.cfg = cfg
        self._secrets = secrets
        self._submit = submit
        self.metrics = metrics
        self.allow_ula = allow_ula
        self.replays = auth.ReplayCache(window=cfg.timestamp_window * 2)
        self._limited = RateLimited(LOG)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        app.router.add_post(self.cfg.path, self.handle)
        return app

    async def start(self) -> None:
        host, _, port = self.cfg.listen.rpartition(":")
        ctx = None
        if self.cfg.cert_file and self.cfg.key_file:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.cfg.cert_file), str(self.cfg.key_file))
        else:
            LOG.warning("the webhook listens without TLS: terminate TLS in front of it (Ingress)")
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or None, int(port), ssl_context=ctx)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(port)
        LOG.info(
            "webhook listening", extra=kv(listen=self.cfg.listen, path=self.cfg.path, tls=ctx is not None)
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refuse(self, request: web.Request, status: int, reason: str, why: str) -> web.Response:
        self.metrics.messages.labels("webhook", reason).inc()
        self._limited.warning(f"webhook-{reason}", f"refused a webhook request ({status}): {why}",
                              peer=request.remote or "?")  # fmt: skip
        return web.Response(status=status, text=why + "\n")

    async def handle(self, request: web.Request) -> web.Response:
        received = utcnow()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(
                request, 413, "too-large", f"body larger than {self.cfg.max_body_bytes} bytes"
            )
        try:
            headers = request.headers
            auth.verify(self._secrets, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER), body,
                        time.time(), self.cfg.timestamp_window, self.replays)  # fmt: skip
        except auth.AuthError as e:
            return self._refuse(
                request, e.status, {401: "unauthorized", 409: "replay"}.get(e.status, "invalid"), str(e)
            )
        try:
            state = decode(body)
        except WireError as e:
            return self._refuse(request, 400, "invalid", str(e))
        if not self.allow_ula:
            ula = [str(p.prefix) for p in state.prefixes if p.prefix.subnet_of(UNIQUE_LOCAL)]
            if ula:
                return self._refuse(request, 422, "ula", f"unique-local prefix {ula[0]} is not allowed "
                                                         "(set allowULA in clusterd to accept ULA)")  # fmt: skip
        report = Report(kind="routerd", transport="webhook", state=state, received_at=received)
        status, text = await self._submit(report)
        self.metrics.messages.labels("webhook", "applied" if status < 300 else f"http-{status}").inc()
        return web.Response(status=status, text=text + "\n")
