"""Leader election on a coordination.k8s.io Lease (decisions in clusterd/core/lease.py).

Every interval is timed with the monotonic clock; the wall clock only fills the
Lease's timestamps for people reading it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from clusterd.adapters.events import micro_time
from clusterd.adapters.kube import Conflict, Kube
from clusterd.core.lease import LeaseRecord, Seen, Timing, decide, leading, lost, release, written
from routerd.logs import RateLimited

LOG = logging.getLogger("clusterd.leader")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _record(lease: dict[str, Any] | None) -> LeaseRecord | None:
    if lease is None or not lease.get("spec"):
        return None
    s = lease["spec"]
    return LeaseRecord(
        holder=s.get("holderIdentity"),
        acquired=_time(s.get("acquireTime")),
        renewed=_time(s.get("renewTime")),
        duration=s.get("leaseDurationSeconds") or 15,
        transitions=s.get("leaseTransitions") or 0,
    )


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing,
        on_change: Callable[[bool], None],
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.on_change = on_change
        self.leader = False
        self.seen = Seen()
        self._deadline: asyncio.TimerHandle | None = None
        self._limited = RateLimited(LOG)

    def _lease(self, rec: LeaseRecord, current: dict[str, Any] | None) -> dict[str, Any]:
        meta = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        spec = {
            "holderIdentity": rec.holder,
            "acquireTime": micro_time(rec.acquired) if rec.acquired else None,
            "renewTime": micro_time(rec.renewed) if rec.renewed else None,
            "leaseDurationSeconds": rec.duration,
            "leaseTransitions": rec.transitions,
        }
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {k: v for k, v in spec.items() if v is not None}}  # fmt: skip

    def _update(self) -> None:
        """Lead exactly while the core says so; look again the moment the renew deadline passes.

        The timer steps the leader down on time even while a call to the API server hangs.
        """
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        now = time.monotonic()
        leader = leading(self.seen, self.identity, now, self.timing)
        if leader and self.seen.renewed is not None:
            due = self.seen.renewed + self.timing.renew_deadline - now
            self._deadline = asyncio.get_running_loop().call_later(due, self._update)
        if leader == self.leader:
            return
        rec = self.seen.record
        if not leader and self.seen.renewed is not None and rec is not None and rec.holder == self.identity:
            LOG.warning("could not renew the Lease within the renew deadline: stepping down")
        self.leader = leader
        self.on_change(leader)

    async def _attempt(self) -> float:
        """One look at the Lease, and the write the core asks for; seconds until the next look."""
        timeout = self.timing.renew_deadline
        current = await self.kube.get_lease(self.namespace, self.name, timeout)
        # Observed after the answer arrived: a follower never dates a renewal earlier than the
        # leader sent it.
        d = decide(
            self.seen, _record(current), self.identity, time.monotonic(), datetime.now(UTC), self.timing
        )
        self.seen = d.seen
        if d.write is not None:
            sent = time.monotonic()  # the leader counts its deadline from before the write
            got = await self.kube.write_lease(
                self.namespace, self._lease(d.write, current), current is None, timeout
            )
            self.seen = written(_record(got), sent)
        return d.retry_in

    async def run(self) -> None:
        while True:
            retry_in = self.timing.retry
            try:
                retry_in = await self._attempt()
            except Conflict:
                self.seen = lost(self.seen)  # another replica wrote first
            except Exception as e:
                self._limited.warning("lease-failed", f"cannot read or renew the Lease: {e}")
            self._update()
            await asyncio.sleep(retry_in)

    async def release(self) -> None:
        """Hand the Lease back on a clean stop, so a follower takes over at once."""
        if not self.leader:
            return
        self.seen = lost(self.seen)
        self._update()  # stop acting as the leader before anyone else can start
        try:
            timeout = self.timing.renew_deadline
            current = await self.kube.get_lease(self.namespace, self.name, timeout)
            rec = _record(current)
            freed = release(rec, self.identity) if rec is not None else None
            if freed is not None:
                await self.kube.write_lease(self.namespace, self._lease(freed, current), False, timeout)
        except Exception as e:
            LOG.warning(f"could not release the Lease: {e}")
