"""The Kubernetes API adapter: typed calls clusterd makes, watches, and API errors as data.

Every call is a coroutine; the blocking client runs in this adapter's own
thread pool so the event loop never waits on the network. Every write carries
the resourceVersion it was planned from: a concurrent change gets a 409 and the
object is planned again from the fresh copy the watch delivers. Failures come
out as :class:`ApiError` (with the HTTP status) or :class:`Unreachable`, never
as the client library's own exceptions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from clusterd import crd
from routerd.logs import RateLimited, kv

LOG = logging.getLogger("clusterd.kube")
CILIUM = "cilium.io"
EVENTS_NAMESPACE = "default"
"""Events about cluster-scoped objects live here, as client-go's recorder puts them."""


T = TypeVar("T")


class ApiError(Exception):
    """The API server answered a call with an error status (``status`` 0: no answer at all)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(ApiError):
    """409: the object changed since it was read; plan again from the fresh copy."""


class Gone(ApiError):
    """404: the object (or its kind) does not exist."""


class Unreachable(ApiError):
    """No answer: the API server is down, unreachable, or the call timed out."""


@dataclass(frozen=True)
class Resource:
    """A kind of object, as its REST path names it (group "" is the core API)."""

    group: str
    version: str
    plural: str


DYNAMIC_PREFIXES = Resource(crd.GROUP, crd.VERSION, crd.PLURAL)
SERVICES = Resource("", "v1", "services")
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def api_client(kubeconfig: Path | None) -> k8s.ApiClient:
    """In-cluster credentials when running in a pod, else a kubeconfig."""
    cfg = k8s.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    return k8s.ApiClient(cfg)


def _raw(resp: Any) -> Any:
    """The JSON body of a call made with ``_preload_content=False``.

    The client's model classes cost about a millisecond of CPU per object to
    build and as much to turn back into a dict; with thousands of Services
    that was clusterd's largest cost in a renumbering (docs/performance.md).
    """
    return json.loads(resp.data)


def _trim(obj: Any) -> Any:
    """Drop ``metadata.managedFields`` from a cached object: never read, often half its size."""
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        obj["metadata"].pop("managedFields", None)
    return obj


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise TypeError(f"expected a JSON object from the API, got {type(obj).__name__}")
    return obj


def _message(e: k8s.ApiException) -> str:
    """The ``Status`` message the API server sent (what was refused and why), if any."""
    try:
        return str(json.loads(e.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        return ""


def _api_error(e: BaseException) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, k8s.ApiException):
        status, reason, message = int(e.status or 0), str(e.reason), _message(e)
        if status == 409:
            return Conflict(status, reason, message)
        if status == 404:
            return Gone(status, reason, message)
        if status == 0:
            return Unreachable(0, reason, message)
        return ApiError(status, reason, message)
    return Unreachable(0, type(e).__name__, str(e))


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
    """The calls clusterd makes, as coroutines."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        # Sixteen calls in flight: a renumbering writes hundreds of Services, and the
        # default executor has only a few threads on a small node.
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="kube")
        # The Lease has its own thread: a renewal never queues behind a renumbering's writes.
        self._lease_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kube-lease")
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.coordination = k8s.CoordinationV1Api(api)
        self.writes = 0
        """API writes made (benchmarks and tests count them)."""

    async def _call(self, fn: Callable[..., T], *args: Any, _pool: ThreadPoolExecutor | None = None,
                    **kwargs: Any) -> T:  # fmt: skip
        def call() -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # the client's exceptions, urllib3's, OSError: all become ours
                raise _api_error(e) from None

        return await asyncio.get_running_loop().run_in_executor(_pool or self._pool, call)

    def watch(self, name: str, resource: Resource, deliver: Callable[[str, Any], None]) -> Watcher:
        """List and watch ``resource`` on its own connection; ``deliver`` runs on this event loop."""
        api = k8s.ApiClient(self.api.configuration)
        list_fn: Callable[..., Any]
        args: tuple[str, ...] = ()
        if resource == SERVICES:
            list_fn = k8s.CoreV1Api(api).list_service_for_all_namespaces
        elif resource == CRDS:
            list_fn = k8s.ApiextensionsV1Api(api).list_custom_resource_definition
        else:
            list_fn = k8s.CustomObjectsApi(api).list_cluster_custom_object
            args = (resource.group, resource.version, resource.plural)
        w = Watcher(name, api, list_fn, args, deliver, asyncio.get_running_loop())
        w.start()
        return w

    def close(self) -> None:
        for pool in (self._pool, self._lease_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    # -- DynamicPrefix ---------------------------------------------------------------------

    async def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self._replace_status, obj, status)

    def _replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        body = {**obj, "status": status}
        got = self.custom.replace_cluster_custom_object_status(crd.GROUP, crd.VERSION, crd.PLURAL,
                                                              obj["metadata"]["name"], body)  # fmt: skip
        self.writes += 1
        return _as_dict(_trim(got))

    # -- pools and CIDR groups ---------------------------------------------------------------

    async def patch_list(
        self,
        version: str,
        plural: str,
        obj: dict[str, Any],
        field: str,
        entries: list[Any],
        annotations: dict[str, str | None],
    ) -> dict[str, Any]:
        """Set ``spec.<field>`` and annotations, if the object is still at the version we planned from."""
        return await self._call(self._patch_list, version, plural, obj, field, entries, annotations)

    def _patch_list(
        self,
        version: str,
        plural: str,
        obj: dict[str, Any],
        field: str,
        entries: list[Any],
        annotations: dict[str, str | None],
    ) -> dict[str, Any]:
        body = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"], "annotations": annotations},
            "spec": {field: entries},
        }
        got = self.custom.patch_cluster_custom_object(CILIUM, version, plural, obj["metadata"]["name"], body)
        self.writes += 1
        return _as_dict(_trim(got))

    # -- Services (HA mode) ---------------------------------------------------------------------

    async def patch_service_annotations(
        self, obj: dict[str, Any], annotations: dict[str, str | None]
    ) -> dict[str, Any]:
        return await self._call(self._patch_service_annotations, obj, annotations)

    def _patch_service_annotations(
        self, obj: dict[str, Any], annotations: dict[str, str | None]
    ) -> dict[str, Any]:
        m = obj["metadata"]
        body = {"metadata": {"resourceVersion": m["resourceVersion"], "annotations": annotations}}
        got = self.core.patch_namespaced_service(m["name"], m["namespace"], body, _preload_content=False)
        self.writes += 1
        return _as_dict(_trim(_raw(got)))

    # -- Events ------------------------------------------------------------------------------

    async def event(self, ref: Ref, type_: str, reason: str, message: str, component: str) -> None:
        await self._call(self._event, ref, type_, reason, message, component)

    def _event(self, ref: Ref, type_: str, reason: str, message: str, component: str) -> None:
        now = datetime.now(UTC)
        ns = ref.namespace or EVENTS_NAMESPACE
        ev = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(generate_name=f"{ref.name}.", namespace=ns),
            involved_object=k8s.V1ObjectReference(
                api_version=ref.api_version,
                kind=ref.kind,
                name=ref.name,
                namespace=ref.namespace,
                uid=ref.uid,
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            source=k8s.V1EventSource(component=component),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            reporting_component=component,
        )
        resp: Any = self.core.create_namespaced_event(ns, ev, _preload_content=False)
        resp.read()  # the answer is not needed: skip turning it into a model

    # -- Lease ------------------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str, deadline: float) -> k8s.V1Lease | None:
        try:
            return await self._call(
                self.coordination.read_namespaced_lease, name, namespace, _request_timeout=deadline,
                _pool=self._lease_pool,
            )  # fmt: skip
        except Gone:
            return None

    async def write_lease(
        self, namespace: str, lease: k8s.V1Lease, create: bool, deadline: float
    ) -> k8s.V1Lease:
        if create:
            return await self._call(self.coordination.create_namespaced_lease, namespace, lease,
                                    _request_timeout=deadline, _pool=self._lease_pool)  # fmt: skip
        assert lease.metadata is not None
        assert lease.metadata.name is not None
        return await self._call(self.coordination.replace_namespaced_lease, lease.metadata.name, namespace,
                                lease, _request_timeout=deadline, _pool=self._lease_pool)  # fmt: skip

    # -- whole objects of a cluster-scoped custom kind (kinds whose fields cannot change in place) -------

    async def create(self, group: str, version: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self._create, group, version, plural, body)

    def _create(self, group: str, version: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        got = self.custom.create_cluster_custom_object(group, version, plural, body)
        self.writes += 1
        return _as_dict(_trim(got))

    async def patch(
        self, group: str, version: str, plural: str, obj: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge ``body`` into the object, if it is still at the version we planned from."""
        return await self._call(self._patch, group, version, plural, obj, body)

    def _patch(
        self, group: str, version: str, plural: str, obj: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        m = obj["metadata"]
        body = {**body, "metadata": {**body.get("metadata", {}), "resourceVersion": m["resourceVersion"]}}
        got = self.custom.patch_cluster_custom_object(group, version, plural, m["name"], body)
        self.writes += 1
        return _as_dict(_trim(got))

    async def delete(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> None:
        """Delete the object, if it is still at the version we planned from (gone already: Gone)."""
        await self._call(self._delete, group, version, plural, obj)

    def _delete(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> None:
        m = obj["metadata"]
        pre = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(resource_version=m["resourceVersion"]))
        self.custom.delete_cluster_custom_object(group, version, plural, m["name"], body=pre)
        self.writes += 1


class Watcher:
    """List, then watch, one kind of object in a thread; deliver events on the event loop.

    A 410 (history compacted) or any error relists after a backoff (a 404,
    the kind not served, delivers ``GONE`` first); the first list after each
    (re)start is delivered as a ``SYNC`` with every object, so the receiver
    can drop what vanished while it was not watching.
    """

    def __init__(
        self,
        name: str,
        api: k8s.ApiClient,
        list_fn: Callable[..., Any],
        args: tuple[Any, ...],
        deliver: Callable[[str, Any], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = name
        self.api = api
        self.list_fn = list_fn
        self.args = args
        self.deliver = deliver
        self.loop = loop
        self._stop = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._limited = RateLimited(LOG)
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                doc = _raw(self.list_fn(*self.args, _preload_content=False))  # plain dicts, no models
                rv = doc["metadata"]["resourceVersion"]
                self.loop.call_soon_threadsafe(self.deliver, "SYNC", [_trim(o) for o in doc["items"]])
                self.synced.set()
                backoff = 0.5
                while not self._stop.is_set():
                    self._watch = k8s_watch.Watch()  # type: ignore[no-untyped-call]
                    stream = self._watch.stream(  # type: ignore[no-untyped-call]
                        self.list_fn,
                        *self.args,
                        resource_version=rv,
                        timeout_seconds=300,
                        allow_watch_bookmarks=True,
                        deserialize=False,
                    )
                    for ev in stream:
                        obj = _trim(ev["object"])
                        if ev["type"] == "ERROR":
                            raise k8s.ApiException(
                                status=int(obj.get("code", 500)), reason=obj.get("message")
                            )
                        rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] != "BOOKMARK":
                            self.loop.call_soon_threadsafe(self.deliver, ev["type"], obj)
                        if self._stop.is_set():
                            return
            except k8s.ApiException as e:
                if e.status == 410:
                    LOG.info("watch history expired; relisting", extra=kv(watch=self.name))
                    continue
                if e.status == 404:
                    # The kind is not served: its CRD was deleted (discovery stops us) or was
                    # created a moment ago and is not served yet (no later event restarts us).
                    self.loop.call_soon_threadsafe(self.deliver, "GONE", None)
                else:
                    self._limited.warning("watch-failed", f"watch failed ({e.status}: {e.reason}); retrying",
                                          watch=self.name)  # fmt: skip
            except Exception as e:  # the API server went away, a TLS error, ...
                if self._stop.is_set():
                    return
                self._limited.warning("watch-failed", f"watch failed ({type(e).__name__}: {e}); retrying",
                                      watch=self.name)  # fmt: skip
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
