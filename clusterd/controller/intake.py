"""Report intake: prefix reports in (MQTT, webhook, RA), which DynamicPrefixes take them, who waits.

Holds the newest report of each routerd stream and RA interface, when each
stream was last heard (for the RA fallback's staleness rule), and the webhook
callers waiting for the reconciles their message causes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from clusterd.controller.cache import Cache
from clusterd.controller.keys import DynamicPrefixKey
from clusterd.core.status import Report, published_at
from clusterd.crd import DynamicPrefixSpec, SourceStatus
from clusterd.metrics import Metrics
from routerd.logs import RateLimited

LOG = logging.getLogger("clusterd")
# How long a webhook POST waits for its reconcile: below routerd's default 10 s
# per-attempt timeout, so routerd hears "503, retry" rather than timing out.
WEBHOOK_WAIT = 8.0


def holds(src: SourceStatus | None, report: Report) -> bool:
    """Whether a status source records exactly this routerd message (not reset or replaced since)."""
    m = report.state
    return src is not None and (src.router, src.interface, src.boot, src.sequence) == (
        m.router, m.interface, m.boot, m.sequence)  # fmt: skip


@dataclass
class _Pending:
    """A webhook caller waiting for the DynamicPrefixes its message concerns."""

    names: set[str]
    future: asyncio.Future[tuple[int, str]]
    applied: list[str]
    after: int
    """Only reconciles that start after this one (by the controller's counter) answer it."""


class Intake:
    def __init__(self, cache: Cache, metrics: Metrics, enqueue: Callable[[DynamicPrefixKey], None]) -> None:
        self.cache = cache
        self.metrics = metrics
        self.enqueue = enqueue
        self.reports: dict[tuple[str, str], Report] = {}
        self.heard: dict[tuple[str, str, str | None], datetime] = {}
        self.ra_reports: dict[str, Report] = {}
        self.applied: dict[str, Report] = {}
        """The routerd report each DynamicPrefix's status was last written from (by identity)."""
        self.started = 0
        """Counts reconciles as they start (webhook answers wait for a later one)."""
        self._waiters: list[_Pending] = []
        self._limited = RateLimited(LOG)

    def matching(self, report: Report) -> set[str]:
        out = set()
        for name in self.cache.dps:
            spec = self.cache.spec(name)
            if spec is None:
                continue
            a = spec.acquisition
            r, ra = a.routerd, a.router_advertisement
            if report.kind == "routerd":
                stream = (report.state.router, report.state.interface)
                if r is not None and (r.router, r.interface) == stream and report.transport in r.transports:
                    out.add(name)
            elif ra is not None and ra.enabled and ra.interface == report.state.interface:
                out.add(name)
        return out

    def submit(self, report: Report) -> str | None:
        """A report from MQTT or the RA listener; returns why it was dropped, if it was."""
        if report.kind == "router-advertisement":
            self.ra_reports[report.state.interface] = report
        else:
            s = report.state
            key = (s.router, s.interface)
            self.metrics.last_message.labels(s.router, s.interface).set(report.received_at.timestamp())
            # A retained message was heard when it was published, which may be long past (or unknown):
            # it must not keep the RA fallback off.
            published, stream = published_at(report), (s.router, s.interface, s.boot)
            if published is not None and published > self.heard.get(stream, datetime.min):
                self.heard[stream] = published
            held = self.reports.get(key)
            if held is not None and held.state.boot == s.boot and held.state.sequence >= s.sequence:
                self.metrics.messages.labels(report.transport, "stale").inc()
                why = f"sequence {s.sequence} is not newer than {held.state.sequence} already received"
                # The held message again is a redelivery (QoS 1, the retained copy on reconnect);
                # anything else is a replay or a forgery. The webhook answers its sender instead.
                if report.transport == "mqtt" and held.state != s:
                    self._limited.warning(
                        "stale-message", f"ignored a message from {s.router}/{s.interface}: {why}",
                        router=s.router, interface=s.interface, sequence=s.sequence,
                        expected=f">{held.state.sequence}",
                    )  # fmt: skip
                return why
            self.reports[key] = report
        for name in self.matching(report):
            self.enqueue(DynamicPrefixKey(name))
        return None

    async def submit_webhook(self, report: Report) -> tuple[int, str]:
        """A report from the webhook: answer once its DynamicPrefixes are written (or why not)."""
        dropped = self.submit(report)
        names = self.matching(report)
        if dropped is not None:
            s = report.state
            held = self.reports.get((s.router, s.interface))
            if held is None or held.state != s:
                return 409, dropped
            # The very message already held: a retry after a 503 or a lost answer. Answer it
            # with the outcome of a fresh reconcile (which writes nothing if all is in place).
            for name in names:
                self.enqueue(DynamicPrefixKey(name))
        if not names:
            s = report.state
            return 202, f"accepted; no DynamicPrefix takes routerd {s.router}/{s.interface} over the webhook"
        pending = _Pending(set(names), asyncio.get_running_loop().create_future(), [], self.started)
        self._waiters.append(pending)
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), WEBHOOK_WAIT)
        except TimeoutError:
            return 503, "the status could not be written in time (is the API server reachable?); retry"
        finally:
            if pending in self._waiters:
                self._waiters.remove(pending)

    def resolve(self, name: str, code: int, message: str, started: int) -> None:
        for w in list(self._waiters):
            if name not in w.names or w.future.done() or started <= w.after:
                continue  # a reconcile that began before the message arrived says nothing about it
            if code >= 300:
                w.future.set_result((code, f"{name}: {message}"))
                continue
            w.names.discard(name)
            w.applied.append(name)
            if not w.names:
                w.future.set_result((200, f"applied to {', '.join(sorted(w.applied))}"))

    def reports_for(self, spec: DynamicPrefixSpec) -> list[Report]:
        out = []
        r = spec.acquisition.routerd
        rep = self.reports.get((r.router, r.interface)) if r is not None else None
        if r is not None and rep is not None and rep.transport in r.transports:
            out.append(rep)
        ra = spec.acquisition.router_advertisement
        if ra is not None and ra.enabled and (rep := self.ra_reports.get(ra.interface)) is not None:
            out.append(rep)
        return out
