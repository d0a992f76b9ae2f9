"""The Kubernetes API adapter: typed calls clusterd makes, watches, and API errors as data.

Every call is a coroutine on the event loop (clusterd's own small HTTP client,
clusterd/adapters/http.py: plain JSON dicts, no client models). Every write
carries the resourceVersion it was planned from: a concurrent change gets a
409 and the object is planned again from the fresh copy the watch delivers.
Failures come out as :class:`ApiError` (with the HTTP status) or
:class:`Unreachable`. Every call and every watch has a time limit, so a
connection whose other end vanished silently is noticed and replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from clusterd import crd
from clusterd.adapters.errors import ApiError, Conflict, Gone, Unreachable
from clusterd.adapters.events import Recorder
from clusterd.adapters.http import Http, Response, Silent, TransportError
from clusterd.adapters.kubeconfig import Credentials, from_configuration
from routerd.logs import RateLimited, kv

LOG = logging.getLogger("clusterd.kube")
TIMEOUT = 60.0
"""Seconds: a call without an answer fails, and a watch is renewed, within about this long."""
MERGE_PATCH = "application/merge-patch+json"
__all__ = ["ApiError", "Conflict", "Gone", "Kube", "Ref", "Resource", "Unreachable", "Watcher"]


@dataclass(frozen=True)
class Resource:
    """A kind of object, as its REST path names it (group "" is the core API)."""

    group: str
    version: str
    plural: str

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        ns = f"/namespaces/{quote(namespace)}" if namespace else ""
        return f"{base}{ns}/{self.plural}" + (f"/{quote(name)}" if name else "")


DYNAMIC_PREFIXES = Resource(crd.GROUP, crd.VERSION, crd.PLURAL)
SERVICES = Resource("", "v1", "services")
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
APISERVICES = Resource("apiregistration.k8s.io", "v1", "apiservices")
LEASES = Resource("coordination.k8s.io", "v1", "leases")


def _trim(obj: Any) -> Any:
    """Drop ``metadata.managedFields`` from a cached object: never read, often half its size."""
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        obj["metadata"].pop("managedFields", None)
    return obj


def _error(resp: Response) -> ApiError:
    """The ``Status`` the API server sent, as our error type (what was refused and why)."""
    try:
        message = str(json.loads(resp.body or b"{}").get("message", ""))
    except (ValueError, AttributeError):
        message = ""
    kind = {409: Conflict, 404: Gone}.get(resp.status, ApiError)
    return kind(resp.status, resp.reason, message)


@dataclass(frozen=True)
class Ref:
    """What an Event is about."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Ref:
        m = obj["metadata"]
        # Items of a list response carry no apiVersion/kind; only Services reach here that way.
        return cls(
            obj.get("apiVersion", "v1"),
            obj.get("kind", "Service"),
            m["name"],
            m.get("namespace"),
            m.get("uid"),
        )


class Kube:
    """The calls clusterd makes, as coroutines.

    ``api``: :class:`Credentials` (clusterd.adapters.kubeconfig.load), or an
    official client ``ApiClient``/``Configuration`` whose settings are used.
    """

    def __init__(self, api: Credentials | Any, timeout: float = TIMEOUT, instance: str | None = None) -> None:
        creds = api if isinstance(api, Credentials) else from_configuration(api)
        self.timeout = timeout

        def http(limit: int) -> Http:
            return Http(creds.server, creds.context, creds.server_hostname, creds.authorization, limit)

        # Sixteen calls in flight: a renumbering writes hundreds of Services.
        self._http = http(16)
        # The Lease has its own connection: a renewal never queues behind a renumbering's writes.
        self._lease = http(1)
        self._watches = http(1 << 16)  # each watch holds its own connection
        self.events = Recorder(self._request, instance or os.uname().nodename)
        self.writes = 0
        """API writes made (benchmarks and tests count them)."""

    async def _request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                       within: float | None = None, lease: bool = False) -> dict[str, Any]:  # fmt: skip
        http = self._lease if lease else self._http
        data = None if body is None else json.dumps(body).encode()
        try:
            resp = await http.request(
                method, path, data, within=within or self.timeout, content_type=content_type
            )
        except TransportError as e:
            raise Unreachable(0, "Unreachable", str(e)) from None
        if resp.status >= 400:
            raise _error(resp)
        doc = json.loads(resp.body)
        if not isinstance(doc, dict):
            raise Unreachable(0, "BadAnswer", f"expected a JSON object from {path}")
        return doc

    def watch(
        self, name: str, resource: Resource, deliver: Callable[[str, Any], None], forbidden: str | None = None
    ) -> Watcher:
        """List and watch ``resource`` on its own connection; ``deliver`` runs on this event loop.
        ``forbidden``: what clusterd goes without while it may not list them (then they read as none)."""
        w = Watcher(name, self, resource, deliver, forbidden)
        w.start()
        return w

    def close(self) -> None:
        for http in (self._http, self._lease, self._watches):
            http.close()

    # -- DynamicPrefix ---------------------------------------------------------------------

    async def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        path = DYNAMIC_PREFIXES.path(obj["metadata"]["name"]) + "/status"
        got = await self._request("PUT", path, {**obj, "status": status})
        self.writes += 1
        return _trim(got)  # type: ignore[no-any-return]

    # -- Services (HA mode) ---------------------------------------------------------------------

    async def patch_service_annotations(
        self, obj: dict[str, Any], annotations: dict[str, str | None]
    ) -> dict[str, Any]:
        m = obj["metadata"]
        body = {"metadata": {"resourceVersion": m["resourceVersion"], "annotations": annotations}}
        got = await self._request(
            "PATCH", SERVICES.path(m["name"], m["namespace"]), body, content_type=MERGE_PATCH
        )
        self.writes += 1
        return _trim(got)  # type: ignore[no-any-return]

    # -- Events ------------------------------------------------------------------------------

    async def event(self, ref: Ref, type_: str, reason: str, message: str, component: str) -> None:
        """Record an Event (events.k8s.io/v1); a repeat of the same one counts in its series."""
        await self.events.record(ref, type_, reason, message, component)

    # -- Lease ------------------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str, deadline: float) -> dict[str, Any] | None:
        try:
            return await self._request("GET", LEASES.path(name, namespace), within=deadline, lease=True)
        except Gone:
            return None

    async def write_lease(
        self, namespace: str, lease: dict[str, Any], create: bool, deadline: float
    ) -> dict[str, Any]:
        if create:
            return await self._request(
                "POST", LEASES.path(None, namespace), lease, within=deadline, lease=True
            )
        path = LEASES.path(lease["metadata"]["name"], namespace)
        return await self._request("PUT", path, lease, within=deadline, lease=True)

    # -- any object --------------------------------------------------------------------------

    async def patch(
        self, resource: Resource, namespace: str | None, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch one object (``namespace`` None: cluster-scoped); put the planned
        resourceVersion in ``body`` to make it conditional."""
        got = await self._request("PATCH", resource.path(name, namespace), body, content_type=MERGE_PATCH)
        self.writes += 1
        return _trim(got)  # type: ignore[no-any-return]

    # -- whole objects of a CRD kind (objects clusterd creates and deletes) -------------------

    async def create(self, resource: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object (``namespace`` None: cluster-scoped); 409 (it exists) comes out as :class:`Conflict`."""
        got = await self._request("POST", resource.path(None, namespace), body)
        self.writes += 1
        return _trim(got)  # type: ignore[no-any-return]

    async def delete(
        self, resource: Resource, namespace: str | None, name: str, resource_version: str
    ) -> None:
        """Delete an object, only if it is still at the version planned from (else 409)."""
        opts = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"resourceVersion": resource_version},
        }
        await self._request("DELETE", resource.path(name, namespace), opts)
        self.writes += 1


class Watcher:
    """List, then watch, one kind of object; deliver events on the event loop.

    A 410 (history compacted) or any error relists after a backoff (a 404,
    the kind not served, delivers ``GONE`` first); the first list after each
    (re)start is delivered as a ``SYNC`` with every object, so the receiver
    can drop what vanished while it was not watching. The server ends each
    watch after ``timeout`` seconds (it is then resumed from the last
    resourceVersion); a watch on which nothing at all arrives for a little
    longer, not even that end, is on a dead connection and is relisted on a
    new one.
    """

    def __init__(
        self, name: str, kube: Kube, resource: Resource, deliver: Callable[[str, Any], None],
        forbidden: str | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.forbidden = forbidden
        self.kube = kube
        self.resource = resource
        self.deliver = deliver
        self.synced = asyncio.Event()
        self._limited = RateLimited(LOG)
        self._task: asyncio.Task[None] | None = None

    @property
    def read_timeout(self) -> float:
        """How long a watch may stay silent: the server's own end of it, plus a margin."""
        return self.kube.timeout + min(15.0, self.kube.timeout / 2)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watch-{self.name}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _list(self) -> str:
        doc = await self.kube._request("GET", self.resource.path())
        self.deliver("SYNC", [_trim(o) for o in doc["items"]])
        self.synced.set()
        return str(doc["metadata"]["resourceVersion"])

    async def _watch(self, rv: str) -> str:
        """One watch from ``rv`` until the server ends it; the last resourceVersion seen."""
        query = urlencode({"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                           "timeoutSeconds": str(max(1, round(self.kube.timeout)))})  # fmt: skip
        async for line in self.kube._watches.stream(f"{self.resource.path()}?{query}", self.read_timeout):
            if isinstance(line, Response):
                raise _error(line)
            ev = json.loads(line)
            obj = _trim(ev["object"])
            if ev["type"] == "ERROR":
                raise ApiError(
                    int(obj.get("code", 500)), str(obj.get("reason", "")), str(obj.get("message", ""))
                )
            rv = obj["metadata"]["resourceVersion"]
            if ev["type"] != "BOOKMARK":
                self.deliver(ev["type"], obj)
        return rv

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                rv = await self._list()
                backoff = 0.5
                while True:
                    rv = await self._watch(rv)
            except ApiError as e:
                if e.status == 410:
                    LOG.info("watch history expired; relisting", extra=kv(watch=self.name))
                    continue
                if e.status == 403 and self.forbidden is not None:
                    if not self.synced.is_set():  # none, rather than no start at all (an older chart's RBAC)
                        self.deliver("SYNC", [])
                        self.synced.set()
                    self._limited.warning("watch-forbidden", f"{e}: {self.forbidden}", watch=self.name)
                elif e.status == 404:
                    # The kind is not served: its CRD was deleted (discovery stops us) or was
                    # created a moment ago and is not served yet (no later event restarts us).
                    self.deliver("GONE", None)
                else:
                    self._limited.warning("watch-failed", f"watch failed ({e}); retrying", watch=self.name)
            except Silent as e:  # a dead connection, not a dead server: relist on a new one at once
                self._limited.warning("watch-silent", f"{e}; relisting", watch=self.name)
                continue
            except TransportError as e:  # the API server went away
                self._limited.warning("watch-failed", f"watch failed ({e}); retrying", watch=self.name)
            except (ValueError, KeyError, TypeError) as e:
                self._limited.warning(
                    "watch-failed", f"watch got a bad answer ({e}); retrying", watch=self.name
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
