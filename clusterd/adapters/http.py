"""A small HTTP/1.1 client on asyncio streams: the few JSON calls and watch streams clusterd makes.

Why not aiohttp or the Kubernetes client: importing aiohttp's client costs
about 10 MB of RSS and the client library's generated models a few seconds of
CPU at start (docs/performance.md); clusterd needs keep-alive, TLS with client
certificates, JSON bodies and one chunked stream per watch, nothing more.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IDLE_SECONDS = 15.0
"""A kept-alive connection idle longer than this is not reused (the server may have closed it)."""
LINE_LIMIT = 64 << 20
"""The longest watch event line (one object: a big CRD is a few MB)."""


class TransportError(Exception):
    """No (complete) answer: refused, reset, timed out, or not HTTP."""


class Silent(TransportError):
    """A stream on which nothing arrived for its read timeout: its connection is dead."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    body: bytes


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.writer.close()


class Http:
    """Calls to one server; at most ``limit`` at a time, each on a kept-alive connection."""

    def __init__(
        self,
        url: str,
        context: ssl.SSLContext | None,
        server_hostname: str | None,
        authorization: Callable[[], str | None],
        limit: int,
    ) -> None:
        u = urlsplit(url)
        if u.scheme not in ("https", "http") or not u.hostname:
            raise ValueError(f"API server URL {url!r}: expected https://HOST[:PORT]")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.context = context if u.scheme == "https" else None
        self.server_hostname = server_hostname or self.host if self.context else None
        self.authorization = authorization
        self._netloc = u.netloc
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(limit)

    async def _open(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.context, server_hostname=self.server_hostname, limit=LINE_LIMIT
            )
        except (OSError, ssl.SSLError) as e:
            raise TransportError(f"cannot connect to {self._netloc}: {e}") from None
        return _Conn(reader, writer)

    def _head(self, method: str, path: str, body: bytes | None, content_type: str) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self._netloc}", "Accept: application/json",
                 "User-Agent: clusterd"]  # fmt: skip
        auth = self.authorization()
        if auth:
            lines.append(f"Authorization: {auth}")
        if body is not None:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def request(
        self, method: str, path: str, body: bytes | None = None, *, within: float,
        content_type: str = "application/json",
    ) -> Response:  # fmt: skip
        """One call; a kept-alive connection the server had closed is retried once on a new one."""
        async with self._slots:
            try:
                async with asyncio.timeout(within):
                    while True:
                        reused = self._take()
                        conn = reused or await self._open()
                        try:
                            conn.writer.write(self._head(method, path, body, content_type) + (body or b""))
                            await conn.writer.drain()
                            status, reason, headers = await _read_head(conn.reader)
                        except (OSError, TransportError, asyncio.IncompleteReadError) as e:
                            conn.close()
                            if reused is not None:
                                continue  # closed while idle: nothing reached the server
                            raise TransportError(f"{method} {path}: {e or type(e).__name__}") from None
                        try:
                            data = await _read_body(conn.reader, headers, status)
                        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                            conn.close()
                            raise TransportError(f"{method} {path}: {e or type(e).__name__}") from None
                        if headers.get("connection", "").lower() == "close":
                            conn.close()
                        else:
                            conn.idle_since = time.monotonic()
                            self._idle.append(conn)
                        return Response(status, reason, data)
            except TimeoutError:
                raise TransportError(f"{method} {path}: no answer within {within:g} s") from None

    def _take(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_SECONDS and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def stream(self, path: str, read_timeout: float) -> AsyncIterator[bytes | Response]:
        """GET a stream of lines on a connection of its own: the lines, or the error ``Response``.

        Raises :class:`TransportError` when nothing at all arrives for ``read_timeout``
        seconds: a connection whose other end vanished without a word (a half-open
        TCP connection) would otherwise wait forever.
        """
        try:
            conn = await asyncio.wait_for(self._open(), read_timeout)
        except TimeoutError:
            raise TransportError(f"cannot connect to {self._netloc} within {read_timeout:g} s") from None
        try:
            async with asyncio.timeout(read_timeout) as deadline:
                conn.writer.write(self._head("GET", path, None, ""))
                await conn.writer.drain()
                status, reason, headers = await _read_head(conn.reader)
                if status != 200:
                    yield Response(status, reason, await _read_body(conn.reader, headers, status))
                    return
                chunked = headers.get("transfer-encoding", "").lower() == "chunked"
                buf = b""
                while True:
                    deadline.reschedule(asyncio.get_running_loop().time() + read_timeout)
                    data = await (_read_chunk(conn.reader) if chunked else conn.reader.read(65536))
                    if not data:
                        if buf.strip():
                            yield buf
                        return
                    buf += data
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield line
        except TimeoutError:
            raise Silent(f"GET {path}: nothing received for {read_timeout:g} s") from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise TransportError(f"GET {path}: {e or type(e).__name__}") from None
        finally:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    line = await reader.readline()
    if not line:
        raise TransportError("connection closed before an answer")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise TransportError(f"not an HTTP answer: {line[:80]!r}")
    headers: dict[str, str] = {}
    while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); b"" at the last."""
    size = int((await reader.readline()).split(b";", 1)[0].strip() or b"x", 16)
    if size == 0:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):  # trailer fields
            pass
        return b""
    data = await reader.readexactly(size)
    await reader.readexactly(2)
    return data


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], status: int = 200) -> bytes:
    if status in (204, 304) or status < 200:  # never a body (RFC 9110 §6.4.1)
        return b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while chunk := await _read_chunk(reader):
            parts.append(chunk)
        return b"".join(parts)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()
