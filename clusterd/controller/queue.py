"""The work queue: each key once, re-queued when it changes while being worked on, retried with backoff.

Modelled on controller-runtime's workqueue: a key added while it waits is not
added twice; added while it is being processed, it is marked dirty and comes
back once :meth:`done`; a failure is retried after a per-key exponential delay
with jitter (routerd/core/backoff.py, the one backoff) that a success resets.
Timers (an old prefix expiring) add a key at a moment, one timer per key.

The first retry comes after 0.5-1 s, then 1-2 s, 2-4 s, ... up to a minute: an
API server that is down is not hammered, and a 409 (the watch brings the fresh
copy within milliseconds) costs under a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

from routerd.core.backoff import Backoff

K = TypeVar("K", bound=Hashable)
RETRY_BASE = 1.0
RETRY_CAP = 60.0


class WorkQueue(Generic[K]):
    def __init__(self, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._limits: dict[K, Backoff] = {}
        self._retries: dict[K, asyncio.TimerHandle] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self.base, self.cap = base, cap

    def add(self, key: K) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> K:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        """The key's work ended; if it changed meanwhile, it is queued again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def retry(self, key: K) -> float:
        """Add the key again after its next backoff delay (errors and 409 conflicts alike)."""
        limit = self._limits.setdefault(key, Backoff(self.base, self.cap))
        delay = limit.next()
        if (old := self._retries.pop(key, None)) is not None:
            old.cancel()
        self._retries[key] = asyncio.get_running_loop().call_later(delay, self._retry_now, key)
        return delay

    def _retry_now(self, key: K) -> None:
        self._retries.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        """The key succeeded (or will not be retried): its next failure starts from the base delay."""
        self._limits.pop(key, None)

    def failures(self, key: K) -> int:
        limit = self._limits.get(key)
        return 0 if limit is None else limit.attempts

    def at(self, key: K, delay: float | None) -> None:
        """Add the key after ``delay`` seconds (replacing its earlier timer); None: no timer."""
        if (t := self._timers.pop(key, None)) is not None:
            t.cancel()
        if delay is not None:
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._timer, key)

    def _timer(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def __len__(self) -> int:
        return len(self._queued)
