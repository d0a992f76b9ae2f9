"""Writes to the API: fenced by leadership, counted, cached when they return; failures typed.

A failure is *permanent* when the API server refuses the write itself (a 4xx
other than 409 and 429: validation, admission, RBAC): sending it again
changes nothing, so it is shown (a condition, an Event) and not retried until
the object or the DynamicPrefix changes. Everything else (5xx, timeouts, an
unreachable API server, 409 conflicts, 429) is *temporary* and retried with
the work queue's per-key backoff.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from clusterd import crd
from clusterd.adapters.kube import ApiError, Gone, Kube, Ref, Resource
from clusterd.controller.cache import Cache, Obj
from clusterd.controller.keys import Key
from clusterd.core.status import Event
from clusterd.metrics import Metrics
from clusterd.targets.base import NAME, Create, Delete, Target, Write, api_group, api_version
from routerd.logs import RateLimited, kv

LOG = logging.getLogger("clusterd")
COMPONENT = "dynamic-prefix-clusterd"


class NotLeader(Exception):
    """Leadership ended while a reconcile was under way: its remaining writes are the new leader's."""


class Permanent(Exception):
    """The API server refused a write (4xx other than 409/429): the same write would be refused again."""

    def __init__(self, what: str, error: ApiError) -> None:
        super().__init__(f"{what} was refused ({error.status} {error.reason}): {error.message}")
        self.error = error


def permanent(e: BaseException) -> bool:
    return isinstance(e, ApiError) and 400 <= e.status < 500 and e.status not in (409, 429)


class Writer:
    def __init__(self, kube: Kube, cache: Cache, metrics: Metrics, enqueue: Callable[[Key], None]) -> None:
        self.kube = kube
        self.cache = cache
        self.enqueue = enqueue
        self.metrics = metrics
        self.leader = False
        self._limited = RateLimited(LOG)

    def fence(self) -> None:
        """Before each write: a replica that stopped leading mid-reconcile writes nothing more."""
        if not self.leader:
            raise NotLeader("leadership lost")

    async def status(self, obj: Obj, status: crd.DynamicPrefixStatus) -> Obj:
        self.fence()
        name = obj["metadata"]["name"]
        try:
            got = await self.kube.replace_status(obj, status.dump())
        except Gone:
            return obj
        except ApiError as e:
            if permanent(e):
                raise Permanent(f"the status of DynamicPrefix {name}", e) from e
            raise
        self.metrics.api_writes.labels("status").inc()
        self.cache.written(None, obj, got)
        return got

    async def patch(self, t: Target, obj: Obj, p: Write) -> Obj | None:
        """Write ``p`` at the version ``obj`` was read (``obj``: the body, for a Create); None when the
        object is gone (or was deleted)."""
        self.fence()
        m = obj["metadata"]
        who = f"{m['namespace']}/{m['name']}" if m.get("namespace") else m["name"]
        what = f"{t.kind} {who}"
        try:
            if isinstance(p, Create | Delete):
                return await self._whole(t, obj, p)
            if t.crd or p.spec is not None:  # spec fields and the record, at the planned version
                if p.spec is not None:  # spec fields (a NetworkPolicy's rules, a Calico pool's disabled)
                    spec = dict(p.spec)
                else:  # a custom kind's one list
                    assert p.field is not None
                    assert p.entries is not None
                    spec = {p.field: p.entries}
                meta = {"resourceVersion": m["resourceVersion"], "annotations": dict(p.annotations)}
                version = self.cache.served[t.kind]
                resource = Resource(api_group(t, version), version, t.plural)
                got = await self.kube.patch(
                    resource, m.get("namespace"), m["name"], {"metadata": meta, "spec": spec}
                )
            else:  # a Service's annotations
                got = await self.kube.patch_service_annotations(obj, dict(p.annotations))
        except Gone:
            return None
        except ApiError as e:
            self._count(t, who, "failed")
            if permanent(e):
                raise Permanent(what, e) from e
            raise
        except Exception:
            self._count(t, who, "failed")
            raise
        self.metrics.api_writes.labels(t.metric).inc()
        self._count(t, who, "written")
        for key in self.cache.written(t.kind, obj, got):
            self.enqueue(key)  # it now claims an address another object claims: both are planned again
        return got

    async def _whole(self, t: Target, obj: Obj, p: Create | Delete) -> Obj | None:
        """Create or delete a whole object; the cache takes it at once (the watch's echo is then skipped)."""
        m, version = obj["metadata"], self.cache.served[t.kind]
        resource = Resource(api_group(t, version), version, t.plural)
        store, ident = self.cache.objects[t.kind], (m.get("namespace"), m["name"])
        got: Obj | None = None
        if isinstance(p, Create):
            try:
                body = {**p.body, "apiVersion": api_version(t, version)}  # the API it is served through
                got = await self.kube.create(resource, m.get("namespace"), body)
            except Gone as e:  # not "done": a CRD a moment old is not served yet, or the namespace is gone
                raise ApiError(503, "NotServedYet", f"creating {t.kind} {m['name']}: {e}; retrying") from e
            except ApiError as e:  # an object by that name that clusterd does not keep: rename it
                if e.status == 409:
                    raise Permanent(f"{t.kind} {m['name']}", e) from e
                raise
            store.setdefault(ident, got)
        else:
            with contextlib.suppress(Gone):  # deleted already: done
                await self.kube.delete(resource, m.get("namespace"), m["name"], m["resourceVersion"])
            if (cached := store.get(ident)) is not None and cached["metadata"].get("resourceVersion") == m.get(
                    "resourceVersion"):  # fmt: skip
                del store[ident]
        self.metrics.api_writes.labels(t.metric).inc()
        self._count(t, m["name"], "written")
        return got

    def _count(self, t: Target, name: str, result: str) -> None:
        if t.consumer:
            self.metrics.service_syncs.labels(result).inc()
        else:
            self.metrics.pool_syncs.labels(t.kind, name, result).inc()

    def unchanged(self, t: Target, name: str, waiting: bool = False) -> None:
        self._count(t, name, "waiting" if waiting else "unchanged")

    async def events(self, obj: dict[str, Any], events: list[Event], t: Target | None = None) -> None:
        """Record Events about a DynamicPrefix, or (``t``) an object of a target kind."""
        ref = Ref.of(obj)
        about = {"dynamicprefix": ref.name}
        if t is not None:  # list items carry no kind or apiVersion: the target knows them
            version = self.cache.served.get(t.kind, t.versions[0])
            ref = Ref(api_version(t, version), t.kind, ref.name, ref.namespace, ref.uid)
            dp = (obj["metadata"].get("annotations") or {}).get(NAME)
            name = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
            about = {t.kind.lower(): name, **({"dynamicprefix": dp} if dp else {})}
        for e in events:
            (LOG.warning if e.type == "Warning" else LOG.info)(e.message, extra=kv(**about, reason=e.reason))
            try:
                await self.kube.event(ref, e.type, e.reason, e.message, COMPONENT)
            except Exception as err:  # an Event is worth a log line, not a failed reconcile
                self._limited.warning("event-failed", f"could not record Event {e.reason}: {err}")
