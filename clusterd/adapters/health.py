"""/healthz, /readyz, /leader and /metrics on their own port."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clusterd.metrics import Metrics


class HealthServer:
    def __init__(
        self,
        listen: str,
        ready: Callable[[], tuple[bool, str]],
        metrics: Metrics,
        leading: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        self.listen = listen
        self.ready = ready
        self.leading = leading or (lambda: (True, "leader"))
        self.metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/leader", self._leader)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, _, port = self.listen.rpartition(":")
        site = web.TCPSite(self._runner, host.strip("[]") or None, int(port))
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self.ready()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def _leader(self, request: web.Request) -> web.Response:
        ok, why = self.leading()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
