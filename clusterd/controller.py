"""The controller: reports and watch events in, status, pool and Service writes out.

Caches follow the watches; every change enqueues the DynamicPrefix it
concerns, and one worker reconciles keys one at a time, so a DynamicPrefix is
never planned from two sides at once. A reconcile plans with the pure core,
writes only what differs (with the resourceVersion it planned from), sends
Events, and sets a timer for the next moment time alone changes something
(an old prefix expiring). Failures are retried with backoff and shown in the
conditions; nothing is swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv6Address
from typing import Any, TypeVar

from pydantic import ValidationError

from clusterd import crd
from clusterd.adapters.kube import Conflict, Gone, Kube, Ref
from clusterd.config import Config
from clusterd.core import pools as poolplan
from clusterd.core import services as svcplan
from clusterd.core.status import (
    POOLS_SYNCED,
    SERVICES_SYNCED,
    Event,
    Policy,
    Rejection,
    Report,
    plan,
    published_at,
    routerd_record,
    with_condition,
)
from clusterd.metrics import Metrics
from routerd.logs import RateLimited, kv

LOG = logging.getLogger("clusterd")
K = TypeVar("K")
COMPONENT = "dynamic-prefix-clusterd"
CILIUM_CRDS = {f"{k.plural}.cilium.io": k for k in poolplan.KINDS}
# How long a webhook POST waits for its reconcile: below routerd's default 10 s
# per-attempt timeout, so routerd hears "503, retry" rather than timing out.
WEBHOOK_WAIT = 8.0
POOL_SYNC_WAIT = 30.0
SHOWN_PROBLEMS = 10
"""Services named in the ServicesSynced message; the rest are counted (each has its Event)."""


def _holds(src: crd.SourceStatus | None, report: Report) -> bool:
    """Whether a status source records exactly this routerd message (not reset or replaced since)."""
    m = report.state
    return src is not None and (src.router, src.interface, src.boot, src.sequence) == (
        m.router, m.interface, m.boot, m.sequence)  # fmt: skip


def _services_condition(count: int, problems: dict[str, tuple[str, str]]) -> tuple[bool, str, str]:
    """ServicesSynced from each Service's (reason, message): the reason they share, else ServiceProblems."""
    if not problems:
        return True, "Synced", f"{count} Service(s) in step"
    reasons = {reason for reason, _ in problems.values()}
    reason = reasons.pop() if len(reasons) == 1 and svcplan.NOT_SYNCED not in reasons else "ServiceProblems"
    shown = [f"{k}: {message}" for k, (_, message) in sorted(problems.items())[:SHOWN_PROBLEMS]]
    more = len(problems) - len(shown)
    return False, reason, "; ".join(shown) + (f"; and {more} more (see the Services' Events)" if more else "")


def _cache_written(
    cache: dict[K, dict[str, Any]], key: K, planned: dict[str, Any], got: dict[str, Any]
) -> bool:
    """Cache what a write returned, unless the watch brought a version after the one it was planned from.

    The watch can deliver the write's echo and another writer's later change (LB-IPAM writes a
    Service's and a pool's status) before the write returns; caching the older ``got`` then would
    plan every later write from a stale resourceVersion: a 409 each time, and no event to end it.
    True when cached.
    """
    current = cache.get(key)
    if current is None or current["metadata"]["resourceVersion"] != planned["metadata"]["resourceVersion"]:
        return False
    cache[key] = got
    return True


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class NotLeader(Exception):
    """Leadership ended while a reconcile was under way: its remaining writes are the new leader's."""


@dataclass
class _Pending:
    """A webhook caller waiting for the DynamicPrefixes its message concerns."""

    names: set[str]
    future: asyncio.Future[tuple[int, str]]
    applied: list[str]
    after: int
    """Only reconciles that start after this one (by the controller's counter) answer it."""


class Controller:
    def __init__(self, kube: Kube, cfg: Config, metrics: Metrics, policy: Policy | None = None) -> None:
        self.kube = kube
        self.cfg = cfg
        self.metrics = metrics
        self.policy = policy or Policy(allow_ula=cfg.allow_ula)
        self.dps: dict[str, dict[str, Any]] = {}
        self.pools: dict[tuple[str, str], dict[str, Any]] = {}
        self.cilium_versions: dict[str, str] = {}
        """plural -> the served version clusterd uses (v2 when served, else v2alpha1)."""
        self.reports: dict[tuple[str, str], Report] = {}
        self.heard: dict[tuple[str, str, str | None], datetime] = {}
        self.ra_reports: dict[str, Report] = {}
        self.ra_available = False
        self.leader = not cfg.leader_election.enabled
        self.on_ra_interfaces: Callable[[set[str]], None] | None = None
        self.dp_synced = asyncio.Event()
        self.crds_synced = asyncio.Event()
        self.services_synced = asyncio.Event()
        self.pools_synced = asyncio.Event()
        self._pools_pending: set[str] = set()
        """Which Cilium versions are served is known (so a first pass does not report them missing)."""
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failures: dict[str, int] = {}
        self._pool_problems: dict[tuple[str, str], str] = {}
        self._waiters: list[_Pending] = []
        self._limited = RateLimited(LOG)
        self._applied: dict[str, Report] = {}
        """The routerd report each DynamicPrefix's status was last written from (by identity)."""
        self._started = 0
        """Counts reconciles as they start (webhook answers wait for a later one)."""
        self._pool_watch_restart: Callable[[], None] | None = None
        self.services: dict[str, dict[str, Any]] = {}
        """Services that name a DynamicPrefix or carry clusterd's record, by namespace/name."""
        self._service_problems: dict[str, tuple[str, str]] = {}
        """(reason, message) of each managed Service not fully in step."""
        self._service_addresses: dict[str, set[IPv6Address]] = {}
        """The IPv6 addresses every Service in the cluster holds or requests (clusterd chooses none of them)."""
        self._service_counted: dict[str, str] = {}
        """Service -> the DynamicPrefix whose ServicesSynced condition last counted it."""
        self._write_slots = asyncio.Semaphore(16)

    # -- inputs: watches -------------------------------------------------------------------------

    def on_dp(self, kind: str, obj: Any) -> None:
        if kind == "SYNC":
            self.dps = {o["metadata"]["name"]: o for o in obj}
            self.dp_synced.set()
            for name in self.dps:
                self.enqueue(name)
        elif kind == "DELETED":
            name = obj["metadata"]["name"]
            self.dps.pop(name, None)
            self._applied.pop(name, None)
            if (t := self._timers.pop(name, None)) is not None:
                t.cancel()
        elif kind in ("ADDED", "MODIFIED"):
            name = obj["metadata"]["name"]
            old = self.dps.get(name)
            self.dps[name] = obj
            # Our own status writes come back as MODIFIED: only spec changes and
            # other writers' changes need a reconcile.
            moved = old is None or old["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]
            if moved and (
                old is None or old.get("spec") != obj.get("spec") or old.get("status") != obj.get("status")
            ):
                self.enqueue(name)
        self._update_ra_interfaces()

    def on_pool(self, plural: str) -> Callable[[str, Any], None]:
        def deliver(kind: str, obj: Any) -> None:
            if kind == "GONE":
                for key in [k for k in self.pools if k[0] == plural]:
                    del self.pools[key]
                return
            items = obj if kind == "SYNC" else [obj]
            if kind == "SYNC":
                for key in [k for k in self.pools if k[0] == plural]:
                    del self.pools[key]
                self._pools_pending.discard(plural)
                if not self._pools_pending:
                    self.pools_synced.set()
            for o in items:
                key = (plural, o["metadata"]["name"])
                if kind == "DELETED":
                    self.pools.pop(key, None)
                    continue
                old = self.pools.get(key)
                self.pools[key] = o
                if old is not None and old["metadata"]["resourceVersion"] == o["metadata"]["resourceVersion"]:
                    continue
                ann = o["metadata"].get("annotations") or {}
                if poolplan.NAME in ann:
                    self.enqueue(ann[poolplan.NAME])
                elif poolplan.MANAGED in ann:
                    self.enqueue(f"release:{plural}:{o['metadata']['name']}")

        return deliver

    def on_crd(self, kind: str, obj: Any) -> None:
        """Cilium's CRDs come and go; use v2 where served (Cilium >= 1.18), else v2alpha1."""
        items = obj if kind == "SYNC" else [obj]
        changed = False
        if kind == "SYNC":
            self.cilium_versions.clear()
            self.crds_synced.set()
            changed = True

        for o in items:
            name = o["metadata"]["name"]
            if name not in CILIUM_CRDS:
                continue
            plural = CILIUM_CRDS[name].plural
            served = [v["name"] for v in o["spec"]["versions"] if v.get("served")]
            version = "v2" if "v2" in served else ("v2alpha1" if "v2alpha1" in served else None)
            if kind == "DELETED" or version is None:
                changed |= self.cilium_versions.pop(plural, None) is not None
            elif self.cilium_versions.get(plural) != version:
                self.cilium_versions[plural] = version
                changed = True
        if kind == "SYNC" and not self.pools_synced.is_set():
            self._pools_pending = set(self.cilium_versions)  # the first reconcile waits for these lists
            if not self._pools_pending:
                self.pools_synced.set()
        if changed:
            LOG.info("Cilium CRDs", extra=kv(versions=dict(self.cilium_versions) or "none installed"))
            if self._pool_watch_restart is not None:
                self._pool_watch_restart()
            for name in self.dps:
                self.enqueue(name)

    def on_service(self, kind: str, obj: Any) -> None:
        items = obj if kind == "SYNC" else [obj]
        previous = self.services
        if kind == "SYNC":
            self.services = {}
            self._service_addresses = {}
            self.services_synced.set()
        for o in items:
            m = o["metadata"]
            key = f"{m['namespace']}/{m['name']}"
            ann = m.get("annotations") or {}
            self._note_addresses(key, None if kind == "DELETED" else o)
            if kind == "DELETED" or (poolplan.NAME not in ann and svcplan.OWNED not in ann):
                if previous.pop(key, None) is not None:
                    self._service_problems.pop(key, None)
                if (counted := self._service_counted.pop(key, None)) in self.dps:
                    self.enqueue(counted)  # one Service fewer in its ServicesSynced count
                continue
            old = previous.get(key)
            self.services[key] = o
            if old is not None and old["metadata"]["resourceVersion"] == m["resourceVersion"]:
                continue  # the echo of our own write, or a relist: nothing new to plan
            self.enqueue(f"svc:{key}")

    # -- inputs: prefix reports ---------------------------------------------------------------------

    def _matching(self, report: Report) -> set[str]:
        out = set()
        for name, obj in self.dps.items():
            spec = self._spec(obj)
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
        for name in self._matching(report):
            self.enqueue(name)
        return None

    async def submit_webhook(self, report: Report) -> tuple[int, str]:
        """A report from the webhook: answer once its DynamicPrefixes are written (or why not)."""
        if not self.leader:
            return 503, "this clusterd replica is not the leader; retry (the Service reaches the leader)"
        dropped = self.submit(report)
        names = self._matching(report)
        if dropped is not None:
            s = report.state
            held = self.reports.get((s.router, s.interface))
            if held is None or held.state != s:
                return 409, dropped
            # The very message already held: a retry after a 503 or a lost answer. Answer it
            # with the outcome of a fresh reconcile (which writes nothing if all is in place).
            for name in names:
                self.enqueue(name)
        if not names:
            s = report.state
            return 202, f"accepted; no DynamicPrefix takes routerd {s.router}/{s.interface} over the webhook"
        pending = _Pending(set(names), asyncio.get_running_loop().create_future(), [], self._started)
        self._waiters.append(pending)
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), WEBHOOK_WAIT)
        except TimeoutError:
            return 503, "the status could not be written in time (is the API server reachable?); retry"
        finally:
            if pending in self._waiters:
                self._waiters.remove(pending)

    def _resolve(self, name: str, code: int, message: str, started: int) -> None:
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

    # -- leadership ------------------------------------------------------------------------------

    def set_leader(self, leader: bool) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        self.metrics.leader.set(1 if leader else 0)
        LOG.info("leadership", extra=kv(leader=leader))
        if leader:
            for name in self.dps:
                self.enqueue(name)

    def ready(self) -> tuple[bool, str]:
        """Ready once the caches are filled; followers are ready too.

        Gating readiness on leadership would stall every rolling update of a
        two-replica Deployment (the new follower never turns ready). Followers
        answer the webhook with 503 instead, and routerd retries.
        """
        waiting = [n for n, e in (("DynamicPrefixes", self.dp_synced), ("CRDs", self.crds_synced),
                                  ("Services", self.services_synced)) if not e.is_set()]  # fmt: skip
        if waiting:
            return False, f"caches not synced yet: {', '.join(waiting)}"
        return True, "ok (leader)" if self.leader else "ok (follower: another replica holds the Lease)"

    def leading(self) -> tuple[bool, str]:
        return (True, "leader") if self.leader else (False, "follower")

    def _fence(self) -> None:
        """Before each write: a replica that stopped leading mid-reconcile writes nothing more."""
        if not self.leader:
            raise NotLeader("leadership lost")

    # -- the work queue ----------------------------------------------------------------------------

    def enqueue(self, key: str) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _retry_later(self, key: str, error: str) -> None:
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        delay = min(0.5 * 2 ** (n - 1), 60.0)
        self._limited.warning("reconcile-failed", f"{key}: {error}; retrying in {delay:.1f} s", key=key)
        asyncio.get_running_loop().call_later(delay, self.enqueue, key)

    async def run(self) -> None:
        # Plan from complete caches only: a reconcile before the Service or pool lists arrive would
        # report "0 Service(s) in step" and write a status that the next pass takes back.
        await self.crds_synced.wait()
        await self.services_synced.wait()
        try:
            await asyncio.wait_for(self.pools_synced.wait(), POOL_SYNC_WAIT)
        except TimeoutError:
            LOG.warning(
                "pool lists not received; reconciling without them",
                extra=kv(pending=sorted(self._pools_pending)),
            )
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._started += 1
            started = self._started
            try:
                if key.startswith("svc:"):
                    await self._sync_service(key[4:])
                elif key.startswith("release:"):
                    _, plural, name = key.split(":", 2)
                    await self._release_pool(plural, name)
                else:
                    await self.reconcile(key, started)
                self._failures.pop(key, None)
            except Conflict:
                self.enqueue(key)  # planned from a stale copy: the watch brings the fresh one
            except NotLeader:
                self._resolve(key, 503, "this clusterd replica is no longer the leader; retry", started)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.metrics.reconcile_errors.labels("dynamicprefix").inc()
                self._resolve(key, 503, f"could not write: {e}; retry", started)
                self._retry_later(key, f"{type(e).__name__}: {e}")

    # -- reconcile -----------------------------------------------------------------------------------

    def _spec(self, obj: dict[str, Any]) -> crd.DynamicPrefixSpec | None:
        try:
            return crd.DynamicPrefixSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            return None

    def _reports_for(self, spec: crd.DynamicPrefixSpec) -> list[Report]:
        out = []
        r = spec.acquisition.routerd
        rep = self.reports.get((r.router, r.interface)) if r is not None else None
        if r is not None and rep is not None and rep.transport in r.transports:
            out.append(rep)
        ra = spec.acquisition.router_advertisement
        if ra is not None and ra.enabled and (rep := self.ra_reports.get(ra.interface)) is not None:
            out.append(rep)
        return out

    def _environment_problem(self, spec: crd.DynamicPrefixSpec) -> tuple[str, str] | None:
        ra = spec.acquisition.router_advertisement
        if ra is not None and ra.enabled and not self.ra_available:
            return ("RAListenerUnavailable",
                    "routerAdvertisement.enabled is set but this clusterd has no RA listener: enable raFallback "
                    "(hostNetwork and NET_RAW) or use routerd")  # fmt: skip
        return None

    async def reconcile(self, name: str, started: int) -> None:
        if not self.leader:
            return
        obj = self.dps.get(name)
        if obj is None:
            await self._orphaned_pools(name)
            return
        with self.metrics.reconcile_seconds.time():
            await self._reconcile(name, obj, started)

    async def _reconcile(self, name: str, obj: dict[str, Any], started: int) -> None:
        spec = self._spec(obj)
        if spec is None:
            self._limited.warning(
                "invalid-spec", f"DynamicPrefix {name} does not validate; skipped", name=name
            )
            return
        try:
            current = crd.DynamicPrefixStatus.model_validate(obj.get("status") or {})
        except ValidationError:
            LOG.warning("unreadable status: starting it afresh", extra=kv(name=name))
            current = crd.DynamicPrefixStatus()
        now = utcnow()
        generation = int(obj["metadata"].get("generation", 1))
        status = current
        events: list[Event] = []
        next_check = None
        rejected: Rejection | None = None
        applied = self._applied.get(name)
        reports: list[Report | None] = [*self._reports_for(spec)] or [None]
        for report in reports:
            src = routerd_record(status)
            heard = self.heard.get((src.router or "", src.interface or "", src.boot)) if src else None
            # The report the status already holds is not planned again: its sequence is no longer
            # newer, and a retry of it must hear "applied", not "stale".
            fresh = None if report is not None and report is applied and _holds(src, report) else report
            p = plan(spec, status, fresh, now, generation, self.policy, source_heard_at=heard,
                     environment_problem=self._environment_problem(spec))  # fmt: skip
            status, next_check = p.status, p.next_check
            events += p.events
            if fresh is not None and fresh.kind == "routerd":
                rejected = p.rejected
                if rejected is None:
                    applied = fresh
        if status.current_prefix != current.current_prefix and status.current_prefix is not None:
            self.metrics.prefix_changes.labels(name).inc()
        if status != current:
            obj = await self._write_status(obj, status)
        if applied is not None:
            self._applied[name] = applied
        await self._events(obj, events)
        self._schedule(name, next_check)
        # In HA mode pools gain blocks before Services request addresses in them, and lose blocks
        # only after the Services stopped requesting them: Cilium's no_pool condition does not clear
        # once set. Simple mode writes no Service, so each pool changes in one write.
        await self._sync_pools(name, spec, status, shrink=spec.transition.mode != "ha")
        # A webhook sender hears back once the status and pools are written; Services, which
        # can be thousands, follow and report through ServicesSynced.
        if rejected is not None:
            self._resolve(name, 409, rejected.message, started)
        else:
            self._resolve(name, 200, "applied", started)
        ok, reason, message = await self._sync_services(name, spec, status)
        synced = with_condition(status, now, generation, SERVICES_SYNCED, ok, reason, message)
        ok, reason, message = await self._sync_pools(name, spec, status, shrink=True)
        synced = with_condition(synced, now, generation, POOLS_SYNCED, ok, reason, message)
        if synced != status:
            obj = await self._write_status(obj, synced)

    async def _write_status(self, obj: dict[str, Any], status: crd.DynamicPrefixStatus) -> dict[str, Any]:
        self._fence()
        try:
            got = await self.kube.replace_status(obj, status.dump())
        except Gone:
            return obj
        self.metrics.api_writes.labels("status").inc()
        _cache_written(self.dps, obj["metadata"]["name"], obj, got)
        return got

    async def _events(self, obj: dict[str, Any], events: list[Event]) -> None:
        ref = Ref.of(obj)
        about = {"dynamicprefix": ref.name}
        if ref.kind != crd.KIND:  # a Service: its own name, and the DynamicPrefix it follows
            dp = (obj["metadata"].get("annotations") or {}).get(poolplan.NAME)
            about = {"service": f"{ref.namespace}/{ref.name}", **({"dynamicprefix": dp} if dp else {})}
        for e in events:
            LOG.info(e.message, extra=kv(**about, reason=e.reason))
            try:
                await self.kube.event(ref, e.type, e.reason, e.message, COMPONENT)
            except Exception as err:  # an Event is worth a log line, not a failed reconcile
                self._limited.warning("event-failed", f"could not record Event {e.reason}: {err}")

    def _schedule(self, name: str, when: datetime | None) -> None:
        if (t := self._timers.pop(name, None)) is not None:
            t.cancel()
        if when is None:
            return
        delay = max(0.0, (when - utcnow()).total_seconds()) + 0.5
        self._timers[name] = asyncio.get_running_loop().call_later(delay, self.enqueue, name)

    # -- pools -------------------------------------------------------------------------------------------

    def _pools_of(self, name: str) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        for (plural, pname), pobj in sorted(self.pools.items()):
            if (pobj["metadata"].get("annotations") or {}).get(poolplan.NAME) == name:
                out.append((plural, pname, pobj))
        return out

    async def _sync_pools(
        self, name: str, spec: crd.DynamicPrefixSpec, status: crd.DynamicPrefixStatus, shrink: bool
    ) -> tuple[bool, str, str]:
        """Write each pool's ``grow`` step, or with ``shrink`` its final list in one write."""
        if not self.cilium_versions:
            return False, "CiliumCRDsMissing", "no CiliumLoadBalancerIPPool or CiliumCIDRGroup CRD is served"
        problems = []
        synced = 0
        for plural, pname, pobj in self._pools_of(name):
            kind = next(k for k in poolplan.KINDS if k.plural == plural)
            ann = pobj["metadata"].get("annotations") or {}
            want, problem = poolplan.desired(kind, ann, spec, status)
            if problem is not None:
                problems.append(f"{kind.kind} {pname}: {problem}")
                await self._pool_problem(plural, pobj, problem)
                continue
            self._pool_problems.pop((plural, pname), None)
            current = list((pobj.get("spec") or {}).get(kind.field) or [])
            p = poolplan.plan(current, ann, want)
            await self._apply(plural, kind, pobj, p.final if shrink else p.grow)
            synced += 1
        if problems:
            return False, "PoolProblems", "; ".join(problems)
        return True, "Synced", f"{synced} pool(s) and CIDR group(s) in step"

    async def _apply(
        self, plural: str, kind: poolplan.PoolKind, pobj: dict[str, Any], w: poolplan.Write | None
    ) -> None:
        pname = pobj["metadata"]["name"]
        if w is None:
            self.metrics.pool_syncs.labels(kind.kind, pname, "unchanged").inc()
            return
        self._fence()
        planned = pobj
        try:
            pobj = await self.kube.patch_list(
                self.cilium_versions[plural], plural, pobj, kind.field, w.entries,
                {poolplan.MANAGED: poolplan.managed_annotation(w.managed)},
            )  # fmt: skip
        except Exception:
            self.metrics.pool_syncs.labels(kind.kind, pname, "failed").inc()
            raise
        self.metrics.api_writes.labels("pool").inc()
        _cache_written(self.pools, (plural, pname), planned, pobj)
        self.metrics.pool_syncs.labels(kind.kind, pname, "written").inc()
        LOG.info("pool synced", extra=kv(kind=kind.kind, pool=pname, entries=len(w.entries)))

    async def _pool_problem(self, plural: str, pobj: dict[str, Any], problem: str) -> None:
        key = (plural, pobj["metadata"]["name"])
        if self._pool_problems.get(key) == problem:
            return
        self._pool_problems[key] = problem
        LOG.warning(f"{pobj['kind']} {key[1]}: {problem}")
        try:
            await self.kube.event(Ref.of(pobj), "Warning", "NotSynced", problem, COMPONENT)
        except Exception as err:
            self._limited.warning("event-failed", f"could not record an Event: {err}")

    async def _orphaned_pools(self, name: str) -> None:
        for plural, _pname, pobj in self._pools_of(name):
            await self._pool_problem(
                plural, pobj, f"DynamicPrefix {name!r} does not exist; the pool is left as it is"
            )

    async def _release_pool(self, plural: str, pname: str) -> None:
        """The pool's dynamic-prefix.io/name annotation is gone: take back only our entries."""
        if not self.leader or plural not in self.cilium_versions:
            return
        pobj = self.pools.get((plural, pname))
        if pobj is None:
            return
        ann = pobj["metadata"].get("annotations") or {}
        if poolplan.NAME in ann:
            return
        kind = next(k for k in poolplan.KINDS if k.plural == plural)
        current = list((pobj.get("spec") or {}).get(kind.field) or [])
        await self._apply(plural, kind, pobj, poolplan.plan(current, ann, None).final)

    # -- Services (HA mode) -------------------------------------------------------------------------------

    def _service_view(self, obj: dict[str, Any]) -> svcplan.ServiceView:
        m = obj["metadata"]
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return svcplan.ServiceView(
            namespace=m["namespace"],
            name=m["name"],
            type=(obj.get("spec") or {}).get("type", ""),
            annotations=m.get("annotations") or {},
            ingress_ips=tuple(i["ip"] for i in ingress if i.get("ip")),
            families=tuple((obj.get("spec") or {}).get("ipFamilies") or ()),
        )

    def _note_addresses(self, key: str, obj: dict[str, Any] | None) -> None:
        """Index what any Service (managed or not) holds or requests; None: it is gone."""
        held: set[IPv6Address] = set()
        if obj is not None:
            view = self._service_view(obj)
            lb_ip = (obj.get("spec") or {}).get("loadBalancerIP")
            held = svcplan.addresses(view.annotations, view.ingress_ips, lb_ip)
        if held:
            self._service_addresses[key] = held
        else:
            self._service_addresses.pop(key, None)

    def _taken(self) -> set[IPv6Address]:
        """Addresses clusterd must not choose for a Service: other Services' and those Cilium reserves."""
        out: set[IPv6Address] = set().union(*self._service_addresses.values())
        for (plural, _name), pobj in self.pools.items():
            if plural == poolplan.LB_POOL.plural:
                out |= poolplan.reserved(pobj.get("spec") or {})
        return out

    def _plan_service(
        self,
        view: svcplan.ServiceView,
        spec: crd.DynamicPrefixSpec | None,
        status: crd.DynamicPrefixStatus | None,
        also_taken: AbstractSet[IPv6Address] = frozenset(),
    ) -> svcplan.ServicePlan:
        """Plan one Service; what every other Service holds is gathered only when an address is chosen."""
        p = svcplan.plan(view, spec, status, self.cfg.service_ip_annotation)
        if p.chosen:
            p = svcplan.plan(view, spec, status, self.cfg.service_ip_annotation, self._taken() | also_taken)
        return p

    def _dp_of(
        self, view: svcplan.ServiceView
    ) -> tuple[crd.DynamicPrefixSpec | None, crd.DynamicPrefixStatus | None]:
        obj = self.dps.get(view.annotations.get(poolplan.NAME, ""))
        if obj is None:
            return None, None
        spec = self._spec(obj)
        try:
            status = crd.DynamicPrefixStatus.model_validate(obj.get("status") or {})
        except ValidationError:
            status = crd.DynamicPrefixStatus()
        return spec, status

    async def _write_service(self, key: str, obj: dict[str, Any], p: svcplan.ServicePlan) -> None:
        async with self._write_slots:
            self._fence()
            try:
                got = await self.kube.patch_service_annotations(obj, p.annotations)
            except Gone:
                return
            except Exception:
                self.metrics.service_syncs.labels("failed").inc()
                raise
        self.metrics.api_writes.labels("service").inc()
        self.metrics.service_syncs.labels("written").inc()
        if _cache_written(self.services, key, obj, got):
            self._note_addresses(key, got)
        await self._events(got, [Event("Normal", "AddressesUpdated", p.summary)] if p.summary else [])

    async def _service_problem(self, key: str, obj: dict[str, Any], p: svcplan.ServicePlan) -> bool:
        """Record (and announce once) what keeps a Service from being in step; True when it changed."""
        now = None if p.problem is None else (p.reason, p.problem)
        if self._service_problems.get(key) == now:
            return False
        if now is None:
            self._service_problems.pop(key, None)
            return True
        self._service_problems[key] = now
        await self._events(obj, [Event("Normal" if p.waiting else "Warning", p.reason, p.problem or "")])
        return True

    async def _sync_service(self, key: str) -> None:
        if not self.leader:
            return
        obj = self.services.get(key)
        if obj is None:
            return
        view = self._service_view(obj)
        spec, status = self._dp_of(view)
        p = self._plan_service(view, spec, status)
        changed = await self._service_problem(key, obj, p)
        name, counted = view.annotations.get(poolplan.NAME), self._service_counted.get(key)
        if changed or name != counted:  # a new problem or wait, or a Service its count is missing
            for dp in {name, counted}:
                if dp in self.dps:
                    self.enqueue(dp)  # its ServicesSynced condition changes
        if p.annotations:
            await self._write_service(key, obj, p)
        else:
            self.metrics.service_syncs.labels("waiting" if p.waiting else "unchanged").inc()

    async def _sync_services(
        self, name: str, spec: crd.DynamicPrefixSpec, status: crd.DynamicPrefixStatus
    ) -> tuple[bool, str, str]:
        keys = sorted(
            k
            for k, o in self.services.items()
            if (o["metadata"].get("annotations") or {}).get(poolplan.NAME) == name
        )
        for k in [k for k, dp in self._service_counted.items() if dp == name]:
            del self._service_counted[k]
        self._service_counted.update(dict.fromkeys(keys, name))
        if spec.transition.mode != "ha":
            mine = [
                k
                for k, o in self.services.items()
                if svcplan.OWNED in (o["metadata"].get("annotations") or {})
            ]
            for key in mine:
                self.enqueue(f"svc:{key}")  # take back what an earlier ha mode wrote
            return (
                True,
                "SimpleMode",
                "transition.mode is simple: Services keep the addresses Cilium gave them",
            )
        writes = []
        chosen: set[IPv6Address] = set()
        for key in keys:
            obj = self.services[key]
            p = self._plan_service(self._service_view(obj), spec, status, chosen)
            chosen |= set(p.chosen)  # not written yet: the next Service in this pass must not choose them too
            await self._service_problem(key, obj, p)
            if p.annotations:
                writes.append(self._write_service(key, obj, p))
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if any(isinstance(f, Conflict) for f in failures):
            raise Conflict(409, "Conflict", "a Service changed while it was being written")
        if failures:
            raise failures[0]
        ours = set(keys)
        return _services_condition(len(keys), {k: v for k, v in self._service_problems.items() if k in ours})

    # -- RA fallback interfaces ---------------------------------------------------------------------------

    def _update_ra_interfaces(self) -> None:
        if self.on_ra_interfaces is None:
            return
        wanted = set()
        for obj in self.dps.values():
            spec = self._spec(obj)
            ra = spec.acquisition.router_advertisement if spec else None
            if ra is not None and ra.enabled:
                wanted.add(ra.interface)
        self.on_ra_interfaces(wanted)
