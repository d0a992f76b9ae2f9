"""Writes to the API: fenced by leadership, counted, cached when they return; failures typed.

A failure is *permanent* when the API server refuses the write itself (a 4xx
other than 409 and 429: validation, admission, RBAC): sending it again
changes nothing, so it is shown (a condition, an Event) and not retried until
the object or the DynamicPrefix changes. Everything else (5xx, timeouts, an
unreachable API server, 409 conflicts, 429) is *temporary* and retried with
the work queue's per-key backoff.
"""

from __future__ import annotations

import logging
from typing import Any

from clusterd import crd
from clusterd.adapters.kube import ApiError, Gone, Kube, Ref
from clusterd.controller.cache import Cache, Obj
from clusterd.core.status import Event
from clusterd.metrics import Metrics
from clusterd.targets.base import NAME, Create, Delete, Patch, Target
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
    def __init__(self, kube: Kube, cache: Cache, metrics: Metrics) -> None:
        self.kube = kube
        self.cache = cache
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

    async def write(self, t: Target, obj: Obj, w: Patch | Create | Delete) -> Obj | None:
        """Patch or delete ``obj`` at the version it was read, or create ``w`` (``obj``: its template).

        The object written, or None when it is gone (deleted now, or before).
        """
        self.fence()
        name = w.name if isinstance(w, Create) else obj["metadata"]["name"]
        what = f"{t.kind} {name}"
        version = self.cache.served.get(t.kind, t.versions[0])
        try:
            if isinstance(w, Create):
                body = {"apiVersion": f"{t.group}/{version}", "kind": t.kind,
                        "metadata": {**w.metadata, "name": w.name}, "spec": dict(w.spec)}  # fmt: skip
                got = await self.kube.create(t.group, version, t.plural, body)
            elif isinstance(w, Delete):
                await self.kube.delete(t.group, version, t.plural, obj)
                self.cache.forget(t.kind, obj)
                got = None
            elif w.spec is not None:
                body = {"metadata": {"annotations": dict(w.annotations)}, "spec": dict(w.spec)}
                got = await self.kube.patch(t.group, version, t.plural, obj, body)
            elif t.crd:
                assert w.field is not None
                assert w.entries is not None
                got = await self.kube.patch_list(version, t.plural, obj, w.field, w.entries,
                                                 dict(w.annotations))  # fmt: skip
            else:  # the one built-in kind written today: a Service's annotations
                got = await self.kube.patch_service_annotations(obj, dict(w.annotations))
        except Gone:
            if isinstance(w, Delete):
                self.cache.forget(t.kind, obj)
            return None
        except ApiError as e:
            self._count(t, name, "failed")
            if permanent(e):
                raise Permanent(what, e) from e
            raise
        except Exception:
            self._count(t, name, "failed")
            raise
        self.metrics.api_writes.labels(t.metric).inc()
        self._count(t, name, "written")
        if isinstance(w, Create) and got is not None:
            self.cache.created(t.kind, got)
        elif got is not None:
            self.cache.written(t.kind, obj, got)
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
            ref = Ref(
                f"{t.group}/{version}" if t.group else version, t.kind, ref.name, ref.namespace, ref.uid
            )
            dp = (obj["metadata"].get("annotations") or {}).get(NAME)
            name = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
            about = {t.kind.lower(): name, **({"dynamicprefix": dp} if dp else {})}
        for e in events:
            (LOG.warning if e.type == "Warning" else LOG.info)(e.message, extra=kv(**about, reason=e.reason))
            try:
                await self.kube.event(ref, e.type, e.reason, e.message, COMPONENT)
            except Exception as err:  # an Event is worth a log line, not a failed reconcile
                self._limited.warning("event-failed", f"could not record Event {e.reason}: {err}")
