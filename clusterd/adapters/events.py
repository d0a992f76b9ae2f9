"""Events as events.k8s.io/v1 with series, as client-go's tools/events records them.

An Event that repeats one already recorded (same object, type, reason,
action, note, reporting controller and instance) does not create a new
object: the first one's ``series`` counts the repeats (``count``,
``lastObservedTime``), so a condition flapping on every pass leaves one Event.
A series ends after ``FINISH_SECONDS`` without a repeat (client-go's
finishTime); the next occurrence starts a new Event.

Where this differs from client-go: client-go leaves the note out of the key
(the first note stands for the series); here the note is part of it, so
"PrefixChanged to A" and "... to B" stay two Events. And client-go writes
repeats after the second only in a 30-minute heartbeat; here each repeat
is written at once (coalesced while a write for the series is in flight), so
``series.count`` is never behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clusterd.adapters.errors import Conflict, Gone

if TYPE_CHECKING:
    from clusterd.adapters.kube import Ref

EVENTS_NAMESPACE = "default"
"""Events about cluster-scoped objects live here, as client-go's recorder puts them."""
FINISH_SECONDS = 6 * 60
ACTION = "Reconcile"
"""What clusterd was doing when it noticed (events.k8s.io requires an action)."""
NOTE_LIMIT = 1024


def micro_time(t: datetime) -> str:
    """A MicroTime: RFC 3339 with microseconds, UTC."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Series:
    name: str
    namespace: str
    count: int = 1
    last: float = 0.0
    """When last observed (monotonic)."""
    written: int = 0
    """The count the API server holds (0: not created yet)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


Request = Callable[..., Awaitable[dict[str, Any]]]


class Recorder:
    """The series this clusterd recorded lately, and the calls that create and count them."""

    def __init__(self, request: Request, instance: str) -> None:
        self._request = request
        self.instance = instance
        self._series: dict[tuple[Any, ...], _Series] = {}

    async def record(self, ref: Ref, type_: str, reason: str, message: str, component: str) -> None:
        now = time.monotonic()
        for k in [k for k, s in self._series.items() if now - s.last > FINISH_SECONDS]:
            del self._series[k]  # ended: the next occurrence is a new Event
        note = message.encode()[:NOTE_LIMIT].decode(errors="ignore")
        key = (ref, type_, reason, note, component)
        s = self._series.get(key)
        if s is None:
            ns = ref.namespace or EVENTS_NAMESPACE
            s = self._series[key] = _Series(f"{ref.name}.{time.time_ns():x}", ns)
        else:
            s.count += 1
        s.last = now
        async with s.lock:
            if s.written >= s.count:
                return  # a write that finished meanwhile carried this occurrence too
            count, at = s.count, micro_time(datetime.now(UTC))
            series = {"count": count, "lastObservedTime": at} if count > 1 else None
            path = f"/apis/events.k8s.io/v1/namespaces/{s.namespace}/events"
            if s.written:
                try:
                    await self._patch(f"{path}/{s.name}", series)
                    s.written = count
                    return
                except Gone:
                    pass  # the Event expired (the API server keeps them an hour): record it again
            regarding = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name}
            if ref.namespace:
                regarding["namespace"] = ref.namespace
            if ref.uid:
                regarding["uid"] = ref.uid
            body: dict[str, Any] = {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "eventTime": at,
                "regarding": regarding,
                "type": type_,
                "reason": reason,
                "action": ACTION,
                "note": note,
                "reportingController": component,
                "reportingInstance": f"{component}-{self.instance}"[:128],
            }
            if series is not None:
                body["series"] = series
            try:
                await self._request("POST", path, body)
            except Conflict:  # an earlier attempt created it, and its answer was lost
                if series is not None:
                    await self._patch(f"{path}/{s.name}", series)
            s.written = count

    async def _patch(self, path: str, series: dict[str, Any] | None) -> None:
        await self._request("PATCH", path, {"series": series}, content_type="application/merge-patch+json")
