"""The controller: reports and watch events in, status and target writes out.

Wiring only. The watches fill the :class:`~clusterd.controller.cache.Cache`,
whose handlers say which work a change makes; reports arrive through
:class:`~clusterd.controller.intake.Intake`; one worker takes typed keys from
the :class:`~clusterd.controller.queue.WorkQueue` one at a time, so a
DynamicPrefix is never planned from two sides at once, and hands them to the
reconciler (a DynamicPrefix's pass) or the per-target sync (one object).
Temporary failures are retried with per-key backoff; permanent ones (the API
server refused the write) are shown and wait for a change. Nothing is swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from clusterd.adapters.kube import Kube
from clusterd.config import Config
from clusterd.controller.cache import Cache
from clusterd.controller.intake import Intake
from clusterd.controller.keys import DynamicPrefixKey, Key, ObjectKey, RolloutKey, ServicesSyncedKey
from clusterd.controller.queue import WorkQueue
from clusterd.controller.reconcile import Reconciler
from clusterd.controller.sync import Sync
from clusterd.controller.writes import NotLeader, Permanent, Writer, permanent
from clusterd.core.status import Event, Policy, Report
from clusterd.crd import DynamicPrefixSpec
from clusterd.metrics import Metrics
from clusterd.targets import TARGETS
from clusterd.targets.base import Target
from routerd.logs import RateLimited, kv

__all__ = ["Controller", "NotLeader"]
LOG = logging.getLogger("clusterd")
LIST_WAIT = 30.0
"""How long the first pass waits for the targets' lists before planning without them."""


class Controller:
    def __init__(self, kube: Kube, cfg: Config, metrics: Metrics, policy: Policy | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.cache = Cache(TARGETS)
        self.queue: WorkQueue[Key] = WorkQueue()
        self.writer = Writer(kube, self.cache, metrics, self.queue.add)
        self.writer.leader = not cfg.leader_election.enabled
        self.intake = Intake(self.cache, metrics, self.queue.add)
        self.sync = Sync(
            self.cache, self.writer, self.queue.add, cfg.service_ip_annotation, cfg.service_ha_mode
        )
        self.reconciler = Reconciler(self.cache, self.intake, self.sync, self.writer, metrics,
                                     policy or Policy(allow_ula=cfg.allow_ula), self._environment_problem,
                                     lambda name, delay: self.queue.at(DynamicPrefixKey(name), delay),
                                     self.queue.add)  # fmt: skip
        self.ra_available = False
        self.on_ra_interfaces: Callable[[set[str]], None] | None = None
        self.on_served: Callable[[dict[str, str]], None] | None = None
        """Called with kind -> version when the served versions of the targets' kinds change."""
        self.dp_synced, self.crds_synced = asyncio.Event(), asyncio.Event()
        self.lists_synced = asyncio.Event()
        self._limited = RateLimited(LOG)

    @property
    def leader(self) -> bool:
        return self.writer.leader

    # -- inputs: watches --------------------------------------------------------------------

    def _add(self, keys: list[Key]) -> None:
        for k in keys:
            self.queue.add(k)
        if self.cache.dps_synced:
            self.dp_synced.set()
        if self.cache.crds_synced:
            self.crds_synced.set()
            if not self.cache.lists_pending():
                self.lists_synced.set()

    def on_dp(self, kind: str, obj: Any) -> None:
        self._add(self.cache.on_dp(kind, obj))
        if kind == "DELETED":
            name = obj["metadata"]["name"]
            self.intake.applied.pop(name, None)
            self.queue.at(DynamicPrefixKey(name), None)
        self._update_ra_interfaces()

    def on_crd(self, kind: str, obj: Any) -> None:
        self._on_versions(self.cache.on_crd, kind, obj)

    def on_apiservice(self, kind: str, obj: Any) -> None:
        self._on_versions(self.cache.on_apiservice, kind, obj)

    def _on_versions(self, handler: Callable[[str, Any], list[Key]], kind: str, obj: Any) -> None:
        before = dict(self.cache.served)
        self._add(handler(kind, obj))
        if self.cache.served != before:
            LOG.info("served versions", extra=kv(versions=dict(self.cache.served)))
            if self.on_served is not None:
                self.on_served(self.served_crds())

    def served_crds(self) -> dict[str, str]:
        """Kind -> version of the CRD-backed kinds to watch."""
        return {k: v for k, v in self.cache.served.items() if self.cache.targets[k].crd}

    def on_object(self, target: Target) -> Callable[[str, Any], None]:
        handler = self.cache.on_object(target)
        return lambda kind, obj: self._add(handler(kind, obj))

    # -- inputs: reports --------------------------------------------------------------------

    def submit(self, report: Report) -> str | None:
        return self.intake.submit(report)

    async def submit_webhook(self, report: Report) -> tuple[int, str]:
        if not self.leader:
            return 503, "this clusterd replica is not the leader; retry (the Service reaches the leader)"
        return await self.intake.submit_webhook(report)

    # -- leadership and health ----------------------------------------------------------------

    def set_leader(self, leader: bool) -> None:
        if leader == self.leader:
            return
        self.writer.leader = leader
        self.metrics.leader.set(1 if leader else 0)
        LOG.info("leadership", extra=kv(leader=leader))
        if leader:
            for name in self.cache.dps:
                self.queue.add(DynamicPrefixKey(name))

    def ready(self) -> tuple[bool, str]:
        """Ready once the caches are filled; followers are ready too.

        Gating readiness on leadership would stall every rolling update of a
        two-replica Deployment (the new follower never turns ready). Followers
        answer the webhook with 503 instead, and routerd retries.
        """
        waiting = [n for n, done in (("DynamicPrefixes", self.dp_synced.is_set()),
                                     ("CRDs", self.crds_synced.is_set()), ("Services", self._consumers_listed()))
                   if not done]  # fmt: skip
        if waiting:
            return False, f"caches not synced yet: {', '.join(waiting)}"
        return True, "ok (leader)" if self.leader else "ok (follower: another replica holds the Lease)"

    def _consumers_listed(self) -> bool:
        return all(t.kind in self.cache.listed for t in TARGETS if t.consumer)

    def leading(self) -> tuple[bool, str]:
        return (True, "leader") if self.leader else (False, "follower")

    # -- the worker ---------------------------------------------------------------------------

    async def run(self) -> None:
        # Plan from complete caches only: a pass before the Service or pool lists arrive would
        # report "0 Service(s) in step" and write a status that the next pass takes back.
        await self.crds_synced.wait()
        try:
            await asyncio.wait_for(self.lists_synced.wait(), LIST_WAIT)
        except TimeoutError:
            LOG.warning("lists not received; reconciling without them",
                        extra=kv(pending=self.cache.lists_pending()))  # fmt: skip
        while True:
            key = await self.queue.get()
            self.intake.started += 1
            try:
                await self._work(key, self.intake.started)
            finally:
                self.queue.done(key)

    async def _work(self, key: Key, started: int) -> None:
        name = key.name if isinstance(key, DynamicPrefixKey) else None
        try:
            if not self.leader:
                return
            if isinstance(key, DynamicPrefixKey):
                await self.reconciler.dynamic_prefix(key.name, started)
            elif isinstance(key, RolloutKey):
                await self.reconciler.rollout(key.name)
            elif isinstance(key, ServicesSyncedKey):
                await self.reconciler.services_synced(key.name)
            else:
                await self.sync.one(key)
            self.queue.forget(key)
        except NotLeader:
            if name:
                self.intake.resolve(
                    name, 503, "this clusterd replica is no longer the leader; retry", started
                )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.metrics.reconcile_errors.labels(_kind(key)).inc()
            if isinstance(e, Permanent) or permanent(e):
                # Sent again it would be refused again: shown, and retried once something changes.
                self.queue.forget(key)
                LOG.error(f"{_about(key)}: {e}; not retried until it or its DynamicPrefix changes")
                if name:
                    self.intake.resolve(name, 409, f"the API server refused the write: {e}", started)
                if not isinstance(key, ObjectKey):  # a status write: the DynamicPrefix cannot say so itself
                    await self._refused(key.name, e)
                return
            delay = self.queue.retry(key)
            if name:
                self.intake.resolve(name, 503, f"could not write: {e}; retry", started)
            self._limited.warning("reconcile-failed", f"{_about(key)}: {type(e).__name__}: {e}; "
                                  f"retrying in {delay:.1f} s", key=_about(key))  # fmt: skip

    async def _refused(self, name: str, e: Exception) -> None:
        """An Event on the DynamicPrefix whose own status write was refused."""
        obj = self.cache.dps.get(name)
        if obj is not None:
            await self.writer.events(obj, [Event("Warning", "WriteRefused", str(e))])

    # -- the RA fallback's interfaces ---------------------------------------------------------

    def _environment_problem(self, spec: DynamicPrefixSpec) -> tuple[str, str] | None:
        ra = spec.acquisition.router_advertisement
        if ra is not None and ra.enabled and not self.ra_available:
            return ("RAListenerUnavailable",
                    "routerAdvertisement.enabled is set but this clusterd has no RA listener: enable raFallback "
                    "(hostNetwork and NET_RAW) or use routerd")  # fmt: skip
        return None

    def _update_ra_interfaces(self) -> None:
        if self.on_ra_interfaces is None:
            return
        wanted = set()
        for name in self.cache.dps:
            spec = self.cache.spec(name)
            ra = spec.acquisition.router_advertisement if spec else None
            if ra is not None and ra.enabled:
                wanted.add(ra.interface)
        self.on_ra_interfaces(wanted)


def _kind(key: Key) -> str:
    return key.kind.lower() if isinstance(key, ObjectKey) else "dynamicprefix"


def _about(key: Key) -> str:
    return str(key) if isinstance(key, ObjectKey) else f"DynamicPrefix {key.name}"
