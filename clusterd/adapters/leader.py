"""Leader election on a coordination.k8s.io Lease (decisions in clusterd/core/lease.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kubernetes import client as k8s

from clusterd.adapters.kube import Conflict, Kube
from clusterd.core.lease import LeaseRecord, decide, release
from routerd.logs import RateLimited

LOG = logging.getLogger("clusterd.leader")


def _now() -> datetime:
    return datetime.now(UTC)


def _record(lease: k8s.V1Lease | None) -> LeaseRecord | None:
    if lease is None or lease.spec is None:
        return None
    s = lease.spec
    return LeaseRecord(
        holder=s.holder_identity,
        acquired=s.acquire_time,
        renewed=s.renew_time,
        duration=timedelta(seconds=s.lease_duration_seconds or 15),
        transitions=s.lease_transitions or 0,
    )


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        retry: float,
        on_change: Callable[[bool], None],
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = timedelta(seconds=duration)
        self.retry = timedelta(seconds=retry)
        self.on_change = on_change
        self.leader = False
        self._renewed_at: datetime | None = None
        self._limited = RateLimited(LOG)

    def _lease(self, rec: LeaseRecord, current: k8s.V1Lease | None) -> k8s.V1Lease:
        meta = k8s.V1ObjectMeta(name=self.name, namespace=self.namespace)
        if current is not None and current.metadata is not None:
            meta.resource_version = current.metadata.resource_version
        return k8s.V1Lease(
            metadata=meta,
            spec=k8s.V1LeaseSpec(
                holder_identity=rec.holder,
                acquire_time=rec.acquired,
                renew_time=rec.renewed,
                lease_duration_seconds=int(rec.duration.total_seconds()),
                lease_transitions=rec.transitions,
            ),
        )

    def _set(self, leader: bool) -> None:
        if leader != self.leader:
            self.leader = leader
            self.on_change(leader)

    async def run(self) -> None:
        while True:
            now = _now()
            retry_at = now + self.retry
            try:
                current = await asyncio.to_thread(self.kube.get_lease, self.namespace, self.name)
                d = decide(_record(current), self.identity, now, self.duration, self.retry)
                retry_at = d.retry_at
                if d.write is not None:
                    await asyncio.to_thread(self.kube.write_lease, self.namespace, self._lease(d.write, current),
                                            current is None)  # fmt: skip
                    self._renewed_at = now
                self._set(d.leader)
            except Conflict:
                self._set(False)  # another replica wrote first
            except Exception as e:
                self._limited.warning("lease-failed", f"cannot read or renew the Lease: {e}")
                # Without a renewal for the lease duration, another replica may have
                # taken over: stop writing before that can happen.
                stale = self._renewed_at is None or now - self._renewed_at > self.duration - self.retry
                if self.leader and stale:
                    LOG.warning("could not renew the Lease in time: stepping down")
                    self._set(False)
            await asyncio.sleep(max(0.05, (retry_at - _now()).total_seconds()))

    async def release(self) -> None:
        """Hand the Lease back on a clean stop, so a follower takes over at once."""
        if not self.leader:
            return
        try:
            current = await asyncio.to_thread(self.kube.get_lease, self.namespace, self.name)
            rec = _record(current)
            freed = release(rec, self.identity) if rec is not None else None
            if freed is not None:
                await asyncio.to_thread(
                    self.kube.write_lease, self.namespace, self._lease(freed, current), False
                )
        except Exception as e:
            LOG.warning(f"could not release the Lease: {e}")
        self._set(False)
