"""/healthz, /readyz, /leader and /metrics on their own port.

Four GETs answered on asyncio's own streams: aiohttp's server would cost
about 13 MB of RSS in a clusterd that has no webhook (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clusterd.metrics import Metrics

REQUEST_LIMIT = 8192
"""Bytes of request line and headers a probe may send."""


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
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        host, _, port = self.listen.rpartition(":")
        self._server = await asyncio.start_server(self._serve, host.strip("[]") or None, int(port))
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path in ("/readyz", "/leader"):
            ok, why = (self.ready if path == "/readyz" else self.leading)()
            return (200 if ok else 503), "text/plain", (why + "\n").encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        return 404, "text/plain", b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > REQUEST_LIMIT:
                raise ValueError("request too large")
            method, path, *_ = head.decode("latin-1").split(" ", 2)
            status, ctype, body = self._answer(method, path)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[
                status
            ]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)  # fmt: skip
            await writer.drain()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a probe that hung up or sent garbage gets nothing
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
