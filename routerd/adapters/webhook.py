"""The webhook sink: POST each state, HMAC-SHA256 signed, until acknowledged or superseded.

Standard library only (aiohttp is not in OpenWrt's feed). Headers::

    X-Dynamic-Prefix-Timestamp: <unix seconds>
    X-Dynamic-Prefix-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

TLS is verified (system CAs, or ``ca_file``). A 2xx acknowledges; a 4xx other
than 408/425/429 means the receiver refused this message for good (its reason is
logged) and only a newer state is sent; anything else is retried with
exponential backoff and jitter, and a newer state for the same interface
replaces the one waiting. The secret is never logged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import urllib.error
from urllib.parse import urlsplit
from urllib.request import Request, urlopen  # loads it here, in the main thread: routerd/lean.py

from routerd.adapters.delivery import Delivery, explain
from routerd.config import WebhookSection
from routerd.core.backoff import Backoff
from routerd.core.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER, PrefixState, sign
from routerd.logs import kv
from routerd.settings import tls_context

LOG = logging.getLogger("routerd.webhook")
RETRYABLE_4XX = {408, 425, 429}


class _Outcome(enum.Enum):
    OK = "ok"
    REFUSED = "refused"
    RETRY = "retry"


class WebhookSink:
    """POSTs each state; a state counts as delivered when the receiver answers 2xx."""

    name = "webhook"

    def __init__(self, cfg: WebhookSection, secret: str, setting: str = "webhook") -> None:
        self.cfg = cfg
        self.setting = setting
        self._secret = secret.encode()
        self._ctx = tls_context(cfg.ca_file, f"{setting}.ca_file")
        self.delivery = Delivery(cfg.url)
        self._pending: dict[str, PrefixState] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        return None

    def publish(self, msg: PrefixState) -> None:
        self._pending[msg.interface] = msg
        if msg.interface not in self._tasks:
            self._wake[msg.interface] = asyncio.Event()
            self._tasks[msg.interface] = asyncio.create_task(self._worker(msg.interface))
        self._wake[msg.interface].set()

    def queued(self) -> int:
        """Interfaces whose newest state is not acknowledged yet."""
        return len(self._pending)

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _worker(self, interface: str) -> None:
        backoff = Backoff()
        wake = self._wake[interface]
        loop = asyncio.get_running_loop()
        while True:
            await wake.wait()
            wake.clear()
            msg = self._pending.get(interface)
            if msg is None:
                continue
            outcome = await loop.run_in_executor(None, self._post, msg)
            if self._pending.get(interface) is not msg:
                continue  # superseded while in flight: send the newer one at once
            if outcome is _Outcome.RETRY:
                delay = backoff.next()
                try:
                    await asyncio.wait_for(wake.wait(), timeout=delay)
                except TimeoutError:
                    wake.set()
                continue
            backoff.reset()
            del self._pending[interface]

    def _post(self, msg: PrefixState) -> _Outcome:
        body = msg.to_json()
        ts = int(time.time())
        req = Request(  # noqa: S310 - the scheme is validated by the config model
            self.cfg.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: str(ts),
                SIGNATURE_HEADER: sign(self._secret, ts, body),
                "User-Agent": "routerd",
            },
        )
        fields = kv(url=self.cfg.url, interface=msg.interface, sequence=msg.sequence)
        try:
            with urlopen(req, timeout=self.cfg.timeout, context=self._ctx) as resp:  # noqa: S310
                resp.read(4096)
        except urllib.error.HTTPError as e:
            reason = e.read(300).decode(errors="replace").strip()
            self.delivery.failed(f"HTTP {e.code}: {reason}")
            if 400 <= e.code < 500 and e.code not in RETRYABLE_4XX:
                LOG.error(f"webhook refused the state (HTTP {e.code}): {reason}", extra=fields)
                return _Outcome.REFUSED
            LOG.warning(f"webhook answered HTTP {e.code}; will retry", extra=fields)
            return _Outcome.RETRY
        except (urllib.error.URLError, OSError) as e:
            why = self._explain(e)
            self.delivery.failed(why)
            LOG.warning(f"webhook unreachable: {why}; will retry", extra=fields)
            return _Outcome.RETRY
        self.delivery.succeeded()
        LOG.debug("webhook acknowledged", extra=fields)
        return _Outcome.OK

    def _explain(self, e: OSError) -> str:
        cause = e.reason if isinstance(e, urllib.error.URLError) else e
        if not isinstance(cause, BaseException):
            return str(cause)
        url = urlsplit(self.cfg.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        return explain(cause, url.hostname or "", port, ca_file=self.cfg.ca_file, setting=self.setting)
