"""Per-target sync: each holder's two steps, each consumer, releases, and what keeps them out of step.

Holders (pools) are planned in their DynamicPrefix's pass; consumers
(Services) in that pass too, and on their own key whenever they change. A
problem is announced once (an Event on the object) and counted in the
DynamicPrefix's PoolsSynced or ServicesSynced condition; a write the API
server refused is a problem too, and is not sent again until the object or
the DynamicPrefix changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from clusterd.controller.cache import Cache, Obj
from clusterd.controller.keys import Key, ObjectKey, ServicesSyncedKey
from clusterd.controller.shown import Condition, summarize
from clusterd.controller.writes import Permanent, Writer
from clusterd.core.services import NOT_SYNCED
from clusterd.core.status import Event
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from clusterd.targets.base import Context, Create, Delete, ObjectId, Plan, Target, Write, api_version
from routerd.logs import kv

LOG = logging.getLogger("clusterd")
WRITE_SLOTS = 16
"""Consumer writes in flight at once in a pass (thousands of Services, one write each)."""


def _summary(c: Create, served: str) -> str:
    """The Event on an object made from another (which API it was written as); none for the others."""
    return "" if c.source is None else f"created from {c.source['metadata']['name']} as {served}"


def _named(key: ObjectKey) -> str:
    return f"{key.namespace}/{key.name}" if key.namespace else key.name


class Sync:
    def __init__(
        self, cache: Cache, writer: Writer, enqueue: Callable[[Key], None], ip_annotation: str,
        ha_mode: str = "auto",
    ) -> None:  # fmt: skip
        self.cache = cache
        self.writer = writer
        self.enqueue = enqueue
        self.ip_annotation = ip_annotation
        self.ha_mode = ha_mode
        self.problems: dict[ObjectKey, tuple[str, str]] = {}
        """(reason, message) of each object not in step, as last announced."""
        self.counted: dict[ObjectKey, str] = {}
        """Consumer -> the DynamicPrefix whose condition last counted it."""
        self.refused: dict[ObjectKey, tuple[str | None, Write, str]] = {}
        """The write the API server refused, at the object's version, and why: not sent again unchanged."""
        self._slots = asyncio.Semaphore(WRITE_SLOTS)

    def context(self, dp: str | None) -> Context:
        def get(oid: ObjectId) -> Obj | None:
            return self.cache.get(ObjectKey(*oid))

        if dp is None:
            return Context(
                None, self.cache.all_taken, self.ip_annotation, get=get, default_ha_mode=self.ha_mode
            )
        return Context(self.cache.placements(dp), self.cache.all_taken, self.ip_annotation,
                       owner=self.cache.dps.get(dp), get=get, default_ha_mode=self.ha_mode,
                       following=lambda kind: [o for _k, o in self.cache.following(kind, dp)])  # fmt: skip

    async def _problem(
        self, key: ObjectKey, obj: Obj, problem: tuple[str, str] | None, waiting: bool
    ) -> bool:
        """Record (and announce once) what keeps an object out of step; True when it changed."""
        if self.problems.get(key) == problem:
            return False
        if problem is None:
            self.problems.pop(key, None)
            return True
        self.problems[key] = problem
        await self.writer.events(obj, [Event("Normal" if waiting else "Warning", *problem)],
                                 self.cache.targets[key.kind])  # fmt: skip
        return True

    async def _write(self, t: Target, key: ObjectKey, obj: Obj, p: Write, summary: str = "") -> str | None:
        """Write one change; the refusal's text when the API server refused it (now or before)."""
        rv = obj["metadata"].get("resourceVersion")
        if (refused := self.refused.get(key)) is not None and refused[:2] == (rv, p):
            return refused[2]
        self.refused.pop(key, None)
        self.cache.refused.discard(key)
        try:
            got = await self.writer.patch(t, obj, p)
        except Permanent as e:
            self.refused[key] = (rv, p, str(e))
            self.cache.refused.add(key)
            return str(e)
        if summary and isinstance(p, Delete):  # the Event outlives the object it is about
            await self.writer.events(obj, [Event("Normal", "Deleted", summary)], t)
        elif got is not None and summary:
            await self.writer.events(got, [Event("Normal", "AddressesUpdated", summary)], t)
        return None

    # -- holders ----------------------------------------------------------------------------

    async def holders(
        self, dp: str, spec: DynamicPrefixSpec, status: DynamicPrefixStatus, final: bool
    ) -> Condition:
        """Write each holder's ``grow`` step, or with ``final`` its final list in one write.

        The holders are independent objects: their writes go out together (a renumbering
        with a hundred pools waits for the slowest, not for the sum).
        """
        holders = [t for t in self.cache.targets.values() if not t.consumer]
        ctx = self.context(dp)
        steps = [self._holder(t, key, obj, t.desired(spec, status, obj, ctx), final)
                 for t in holders if t.kind in self.cache.served
                 for key, obj in self.cache.following(t.kind, dp)]  # fmt: skip
        results = await asyncio.gather(*steps, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        problems = [r for r in results if isinstance(r, str)]
        for t in holders:  # the objects clusterd creates itself: missing ones made in either step
            problems += await self._create(t, dp, spec, status, ctx)
        if problems:
            return False, "PoolProblems", "; ".join(problems)
        crds = [
            t for t in holders if t.crd and not t.whole
        ]  # built-in kinds (NetworkPolicies) are written all the same
        if not any(t.kind in self.cache.served for t in crds):
            return False, "PoolCRDsMissing", f"no {' or '.join(t.kind for t in crds)} CRD is served"
        return (
            True,
            "Synced",
            f"{len(results)} object(s) in step (pools, CIDR groups, NetworkPolicies, advertisements)",
        )

    async def _create(
        self, t: Target, dp: str, spec: DynamicPrefixSpec, status: DynamicPrefixStatus, ctx: Context
    ) -> list[str]:
        """Create the objects clusterd keeps whole that are missing; a problem line for each it cannot.

        A problem is shown on the object a create is made from (``Create.source``), else on its body.
        """
        wanted = t.creates(spec, status, ctx)
        if t.kind not in self.cache.served:
            return [f"{t.kind}: its CRD is not served (install or upgrade the component)"] if wanted else []
        problems = []
        for c in wanted:
            m = c.body["metadata"]
            key = ObjectKey(t.kind, m.get("namespace"), m["name"])
            existing = self.cache.get(key)
            if existing is None:
                refused = await self._write(
                    t, key, c.body, c, _summary(c, api_version(t, self.cache.served[t.kind]))
                )
            elif t.follows(existing) != dp or t.has_record(existing) != t.has_record(c.body):
                refused = f"a {t.kind} named {m['name']} exists and is not this DynamicPrefix's; rename it"
            else:
                continue
            shown = dict(c.source) if c.source is not None else c.body
            await self._problem(key, shown, None if refused is None else ("WriteRefused", refused), False)
            if refused is not None:
                problems.append(f"{t.kind} {key.name}: {refused}")
        return problems

    async def _holder(self, t: Target, key: ObjectKey, obj: Obj, p: Plan, final: bool) -> str | None:
        """One holder's step; the line for the condition when it is not in step."""
        w = p.final if final else p.grow
        async with self._slots:
            refused = None if w is None else await self._write(t, key, obj, w, p.summary)
        outcome = self._outcome(p, refused)
        await self._problem(key, obj, outcome, False)
        if outcome is not None:
            return f"{t.kind} {_named(key)}: {outcome[1]}"
        if w is None:
            self.writer.unchanged(t, _named(key))
        else:
            LOG.info("pool synced", extra=kv(kind=t.kind, pool=key.name, write=type(w).__name__,
                                             entries=len(getattr(w, "entries", None) or [])))  # fmt: skip
        return None

    async def orphaned(self, dp: str) -> None:
        """The DynamicPrefix is gone: its holders keep what they have, and say so once (the garbage
        collector deletes the objects clusterd created, owned by the DynamicPrefix)."""
        for t in self.cache.targets.values():
            if t.consumer or t.whole or t.kind not in self.cache.served:
                continue
            for key, obj in self.cache.following(t.kind, dp):
                why = f"DynamicPrefix {dp!r} does not exist; the pool is left as it is"
                await self._problem(key, obj, (NOT_SYNCED, why), False)

    # -- one object on its own key (a consumer, or a holder to release) -------------------------

    async def one(self, key: ObjectKey) -> None:
        t = self.cache.targets[key.kind]
        obj = self.cache.get(key)
        if obj is None or key.kind not in self.cache.served:
            self.problems.pop(key, None)
            self.refused.pop(key, None)
            self.cache.refused.discard(key)
            if (counted := self.counted.pop(key, None)) in self.cache.dps:
                self.enqueue(ServicesSyncedKey(counted))  # one Service fewer in its count
            return
        dp = t.follows(obj)
        if not t.consumer:
            if dp is None:  # the holder no longer follows a DynamicPrefix: take back only our entries
                p = t.desired(None, None, obj, self.context(None))
                refused = None if p.final is None else await self._write(t, key, obj, p.final)
                await self._problem(key, obj, None if refused is None else ("WriteRefused", refused), False)
            return
        spec = self.cache.spec(dp) if dp else None
        p = t.desired(
            spec, self.cache.status(dp) if dp and spec else None, obj, self.context(dp if spec else None)
        )
        refused = await self._consumer_writes(t, key, obj, p)
        changed = await self._problem(key, obj, self._outcome(p, refused), p.waiting)
        counted = self.counted.get(key)
        if changed or dp != counted:  # a new problem or wait, or a Service its count is missing
            for name in {dp, counted}:
                if name in self.cache.dps:
                    self.enqueue(ServicesSyncedKey(name))
        if p.final is None and not p.also:
            self.writer.unchanged(t, key.name, p.waiting)

    @staticmethod
    def _outcome(p: Plan, refused: str | None) -> tuple[str, str] | None:
        if refused is not None:
            return "WriteRefused", refused
        return None if p.problem is None else (p.reason, p.problem)

    # -- consumers, in their DynamicPrefix's pass ------------------------------------------------

    def recount(self, dp: str, spec: DynamicPrefixSpec) -> Condition:
        """ServicesSynced from what each consumer's last sync found; nothing is planned again."""
        keys = [
            k for t in self.cache.targets.values() if t.consumer for k, _o in self.cache.following(t.kind, dp)
        ]
        for k in [k for k, name in self.counted.items() if name == dp]:
            del self.counted[k]
        self.counted.update(dict.fromkeys(keys, dp))
        if spec.transition.mode != "ha":
            return (
                True,
                "SimpleMode",
                "transition.mode is simple: Services keep the addresses Cilium gave them",
            )
        ours = set(keys)
        return summarize(len(keys), {k: v for k, v in self.problems.items() if k in ours})

    async def consumers(self, dp: str, spec: DynamicPrefixSpec, status: DynamicPrefixStatus) -> Condition:
        if spec.transition.mode != "ha":
            for t in self.cache.targets.values():
                for (ns, name), o in list(self.cache.objects[t.kind].items()) if t.consumer else []:
                    if t.has_record(o):
                        self.enqueue(ObjectKey(t.kind, ns, name))  # take back what an earlier ha mode wrote
            return self.recount(dp, spec)
        ctx = self.context(dp)
        writes = []
        for t in [t for t in self.cache.targets.values() if t.consumer]:
            for key, obj in self.cache.following(t.kind, dp):
                p = t.desired(spec, status, obj, ctx)
                ctx.chosen |= set(p.chosen)  # not written yet: the next one in this pass must not choose them
                await self._problem(key, obj, self._outcome(p, None), p.waiting)
                if p.final is not None or p.also:
                    writes.append(self._consumer_write(t, key, obj, p))
                else:
                    self.writer.unchanged(t, key.name, p.waiting)
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        return self.recount(dp, spec)

    async def _consumer_write(self, t: Target, key: ObjectKey, obj: Obj, p: Plan) -> None:
        async with self._slots:
            refused = await self._consumer_writes(t, key, obj, p)
        if refused is not None:
            await self._problem(key, obj, ("WriteRefused", refused), False)

    def _owners_again(self, t: Target, obj: Obj) -> None:
        m = obj["metadata"]
        for r in m.get("ownerReferences") or []:
            if r.get("kind") == t.kind:
                self.enqueue(ObjectKey(t.kind, m.get("namespace"), r["name"]))

    async def _consumer_writes(self, t: Target, key: ObjectKey, obj: Obj, p: Plan) -> str | None:
        """Its own write, then the objects made for it (companions); the first refusal's text."""
        refused = None if p.final is None else await self._write(t, key, obj, p.final, p.summary)
        if refused is None and isinstance(
            p.final, Delete
        ):  # an object made for another: that one may move now
            self._owners_again(t, obj)
        for c in p.also:
            m = c.body["metadata"]
            made = ObjectKey(t.kind, m.get("namespace"), m["name"])
            refused = refused or await self._write(
                t, made, c.body, c, _summary(c, api_version(t, self.cache.served[t.kind]))
            )
        return refused
