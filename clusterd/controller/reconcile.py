"""A DynamicPrefix's pass: plan its status from the reports, write it, then its targets in order.

The status first (so a webhook sender hears back quickly), then each holder's
``grow`` step; then, as a second work item (:class:`RolloutKey`), the
consumers and each holder's ``final`` step (in simple mode, with no consumer in
between, a holder's one final write comes in the first half). A timer is set
for the next moment time alone changes something (an old prefix expiring).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from clusterd import crd
from clusterd.clock import utcnow
from clusterd.controller import shown
from clusterd.controller.cache import Cache, Obj
from clusterd.controller.intake import Intake, holds
from clusterd.controller.keys import Key, RolloutKey
from clusterd.controller.sync import Sync
from clusterd.controller.writes import Writer
from clusterd.core.status import (
    POOLS_SYNCED,
    SERVICES_SYNCED,
    Event,
    Policy,
    Rejection,
    Report,
    plan,
    routerd_record,
    with_condition,
)
from clusterd.metrics import Metrics
from routerd.logs import RateLimited, kv

LOG = logging.getLogger("clusterd")
TIMER_SLACK = 0.5
"""Seconds after a lifetime ends before the timer's pass: the planner then sees it ended."""


class Reconciler:
    def __init__(
        self,
        cache: Cache,
        intake: Intake,
        sync: Sync,
        writer: Writer,
        metrics: Metrics,
        policy: Policy,
        environment_problem: Callable[[crd.DynamicPrefixSpec], tuple[str, str] | None],
        schedule: Callable[[str, float | None], None],
        enqueue: Callable[[Key], None],
    ) -> None:
        self.cache, self.intake, self.sync, self.writer = cache, intake, sync, writer
        self.metrics = metrics
        self.policy = policy
        self.environment_problem = environment_problem
        self.schedule = schedule
        self.enqueue = enqueue
        self._limited = RateLimited(LOG)

    async def dynamic_prefix(self, name: str, started: int) -> None:
        obj = self.cache.dps.get(name)
        if obj is None:
            await self.sync.orphaned(name)
            return
        with self.metrics.reconcile_seconds.time():
            await self._pass(name, obj, started)

    async def services_synced(self, name: str) -> None:
        """Only the ServicesSynced condition, recounted from each Service's last sync."""
        obj, spec, status = self.cache.dps.get(name), self.cache.spec(name), self.cache.status(name)
        if obj is None or spec is None or status is None:
            return
        ok, reason, message = self.sync.recount(name, spec)
        now, generation = utcnow(), int(obj["metadata"].get("generation", 1))
        synced = with_condition(status, now, generation, SERVICES_SYNCED, ok, reason, message)
        synced = synced.model_copy(
            update={"targets": shown.targets(self.sync.cache, self.sync.problems, name, spec)}
        )
        if synced != status:
            await self.writer.status(obj, synced)

    async def _pass(self, name: str, obj: Obj, started: int) -> None:
        spec = self.cache.spec(name)
        if spec is None:
            self._limited.warning(
                "invalid-spec", f"DynamicPrefix {name} does not validate; skipped", name=name
            )
            return
        current = self.cache.status(name) or crd.DynamicPrefixStatus()
        if obj.get("status") and current == crd.DynamicPrefixStatus():
            LOG.warning("unreadable status: starting it afresh", extra=kv(name=name))
        now = utcnow()
        generation = int(obj["metadata"].get("generation", 1))
        status = current
        events: list[Event] = []
        next_check = None
        rejected: Rejection | None = None
        applied = self.intake.applied.get(name)
        reports: list[Report | None] = [*self.intake.reports_for(spec)] or [None]
        for report in reports:
            src = routerd_record(status)
            heard = self.intake.heard.get((src.router or "", src.interface or "", src.boot)) if src else None
            # The report the status already holds is not planned again: its sequence is no longer
            # newer, and a retry of it must hear "applied", not "stale".
            fresh = None if report is not None and report is applied and holds(src, report) else report
            p = plan(spec, status, fresh, now, generation, self.policy, source_heard_at=heard,
                     environment_problem=self.environment_problem(spec))  # fmt: skip
            status, next_check = p.status, p.next_check
            events += p.events
            if fresh is not None and fresh.kind == "routerd":
                rejected = p.rejected
                if rejected is None:
                    applied = fresh
        if status.current_prefix != current.current_prefix and status.current_prefix is not None:
            self.metrics.prefix_changes.labels(name).inc()
        if status != current:
            obj = await self.writer.status(obj, status)
        if applied is not None:
            self.intake.applied[name] = applied
        await self.writer.events(obj, events)
        delay = (
            None if next_check is None else max(0.0, (next_check - utcnow()).total_seconds()) + TIMER_SLACK
        )
        self.schedule(name, delay)
        # In HA mode pools gain blocks before Services request addresses in them, and lose blocks
        # only after the Services stopped requesting them: Cilium's no_pool condition does not clear
        # once set. Simple mode writes no Service, so each pool changes in one write.
        await self.sync.holders(name, spec, status, final=spec.transition.mode != "ha")
        # A webhook sender hears back once the status and pools are written; Services, which
        # can be thousands, follow (after every other DynamicPrefix's first half) and report
        # through ServicesSynced.
        if rejected is not None:
            self.intake.resolve(name, 409, rejected.message, started)
        else:
            self.intake.resolve(name, 200, "applied", started)
        self.enqueue(RolloutKey(name))

    async def rollout(self, name: str) -> None:
        """Consumers, then the holders' final lists, then the conditions, from the status as stored."""
        obj, spec, status = self.cache.dps.get(name), self.cache.spec(name), self.cache.status(name)
        if obj is None or spec is None or status is None:
            return
        now, generation = utcnow(), int(obj["metadata"].get("generation", 1))
        ok, reason, message = await self.sync.consumers(name, spec, status)
        synced = with_condition(status, now, generation, SERVICES_SYNCED, ok, reason, message)
        ok, reason, message = await self.sync.holders(name, spec, status, final=True)
        synced = with_condition(synced, now, generation, POOLS_SYNCED, ok, reason, message)
        synced = synced.model_copy(
            update={"targets": shown.targets(self.sync.cache, self.sync.problems, name, spec)}
        )
        if synced != status:
            await self.writer.status(self.cache.dps.get(name, obj), synced)
