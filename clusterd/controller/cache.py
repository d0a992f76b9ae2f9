"""What the watches delivered, and which work each change makes. Pure: handlers return keys.

The watches call the handlers with ``(kind, obj)`` (``SYNC`` with every
object after each (re)list, ``ADDED``/``MODIFIED``/``DELETED``, ``GONE`` when a
kind stops being served). A handler updates the cache and returns the work
keys the change concerns, and only those: an object whose changed parts are
ones clusterd never reads (Cilium's counts in a pool's status, LB-IPAM's
conditions on a Service) makes no work. Tests drive it without an event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv6Address
from typing import Any

from pydantic import ValidationError

from clusterd import crd
from clusterd.controller.keys import DynamicPrefixKey, Key, ObjectKey
from clusterd.core.placements import Placements
from clusterd.targets.base import ObjectId, Target, aggregated, api_group, crd_name, crd_versions

Obj = dict[str, Any]
Handler = Callable[[str, Any], list[Key]]


def _id(obj: Mapping[str, Any]) -> tuple[str | None, str]:
    m = obj["metadata"]
    return m.get("namespace"), m["name"]


def _rv(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else obj["metadata"].get("resourceVersion")


class Cache:
    def __init__(self, targets: Iterable[Target]) -> None:
        self.targets = {t.kind: t for t in targets}
        self.dps: dict[str, Obj] = {}
        self.objects: dict[str, dict[tuple[str | None, str], Obj]] = {k: {} for k in self.targets}
        """By kind, then (namespace, name): a consumer only while it follows or holds a record."""
        self.served: dict[str, str] = {t.kind: t.versions[0] for t in self.targets.values() if not t.crd}
        """Kind -> the version clusterd uses; a CRD kind only while its CRD is served."""
        self.taken: dict[ObjectId, frozenset[IPv6Address]] = {}
        """Addresses each object holds, requests or holds back (every Service, managed or not)."""
        self.claims: dict[IPv6Address, set[ObjectId]] = {}
        """The same, by address: where two objects claim one, each is planned again."""
        self.refused: set[ObjectKey] = set()
        """Objects whose last write the API server refused: any change of theirs may lift it."""
        self.crd_versions: dict[str, frozenset[str]] = {}
        """Kind -> the versions its CRD serves."""
        self.apis: set[str] = set()
        """The Available APIServices (``v3.projectcalico.org``): versions another API server serves."""
        self.dps_synced = self._crds_listed = self._apis_listed = False
        self.listed: set[str] = set()
        """Kinds whose list arrived since their version was discovered."""
        self._views: dict[str, tuple[str | None, crd.DynamicPrefixSpec | None, crd.DynamicPrefixStatus]] = {}
        self._placements: dict[str, tuple[object, Placements]] = {}

    # -- DynamicPrefixes ----------------------------------------------------------------------

    def on_dp(self, kind: str, obj: Any) -> list[Key]:
        if kind == "SYNC":
            self.dps = {o["metadata"]["name"]: o for o in obj}
            self.dps_synced = True
            return [DynamicPrefixKey(n) for n in self.dps]
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.dps.pop(name, None)
            return []
        old = self.dps.get(name)
        self.dps[name] = obj
        # Our own status writes come back as MODIFIED with the version we cached: nothing to do.
        if old is not None and (_rv(old) == _rv(obj) or (
                old.get("spec") == obj.get("spec") and old.get("status") == obj.get("status"))):  # fmt: skip
            return []
        return [DynamicPrefixKey(name)]

    def spec(self, name: str) -> crd.DynamicPrefixSpec | None:
        return self._view(name)[1]

    def status(self, name: str) -> crd.DynamicPrefixStatus | None:
        """The status as stored (an unreadable one reads as empty); None when there is no DynamicPrefix."""
        return self._view(name)[2] if name in self.dps else None

    def _view(self, name: str) -> tuple[str | None, crd.DynamicPrefixSpec | None, crd.DynamicPrefixStatus]:
        """Spec and status parsed once per resourceVersion (a pass over many objects reads them often)."""
        obj = self.dps.get(name)
        got = self._views.get(name)
        if got is not None and obj is not None and got[0] == _rv(obj):
            return got
        spec, status = None, crd.DynamicPrefixStatus()
        if obj is not None:
            with contextlib.suppress(ValidationError):  # the CRD's schema and CEL rules make this rare
                spec = crd.DynamicPrefixSpec.model_validate(obj.get("spec") or {})
            with contextlib.suppress(ValidationError):  # an unreadable status starts afresh
                status = crd.DynamicPrefixStatus.model_validate(obj.get("status") or {})
            self._views[name] = (_rv(obj), spec, status)
        return _rv(obj), spec, status

    def placements(self, name: str) -> Placements | None:
        """The DynamicPrefix's ranges placed in each prefix, shared until its spec changes."""
        spec = self.spec(name)
        if spec is None:
            return None
        got = self._placements.get(name)
        if got is None or got[0] != spec:
            got = self._placements[name] = (spec, Placements(spec))
        return got[1]

    # -- CRDs: which versions of each target kind are served -----------------------------------

    @property
    def crds_synced(self) -> bool:
        """Both lists arrived that say which versions are served."""
        return self._crds_listed and self._apis_listed

    def on_crd(self, kind: str, obj: Any) -> list[Key]:
        if kind == "SYNC":
            self.crd_versions = {}
            self._crds_listed = True
        by_crd = {crd_name(t): t for t in self.targets.values() if t.crd}
        for o in obj if kind == "SYNC" else [obj]:
            if (t := by_crd.get(o["metadata"]["name"])) is not None:
                self.crd_versions[t.kind] = frozenset() if kind == "DELETED" else crd_versions(o)
        return self._serve()

    def on_apiservice(self, kind: str, obj: Any) -> list[Key]:
        if kind == "SYNC":
            self.apis = set()
            self._apis_listed = True
        for o in obj if kind == "SYNC" else [obj]:
            conditions = (o.get("status") or {}).get("conditions") or []
            up = kind != "DELETED" and any(c.get("type") == "Available" and c.get("status") == "True"
                                           for c in conditions)  # fmt: skip
            (self.apis.add if up else self.apis.discard)(o["metadata"]["name"])
        return self._serve()

    def _serve(self) -> list[Key]:
        """Each CRD kind at the first of its versions served now: by its CRD, or by another API
        server (an Available APIService ``<version>.<group>``)."""
        before = dict(self.served)
        for t in (t for t in self.targets.values() if t.crd):
            other = aggregated(t)
            version = next((v for v in t.versions if (f"{v}.{api_group(t, v)}" in self.apis if v in other
                            else v in self.crd_versions.get(t.kind, ()))), None)  # fmt: skip
            if version is None:
                self.served.pop(t.kind, None)
            else:
                self.served[t.kind] = version
        if self.served == before:
            return []
        self.listed -= {k for k in self.served if before.get(k) != self.served[k]}
        return [DynamicPrefixKey(n) for n in self.dps]

    def lists_pending(self) -> list[str]:
        return sorted(set(self.served) - self.listed)

    # -- the targets' objects ------------------------------------------------------------------

    def on_object(self, target: Target) -> Handler:
        def deliver(kind: str, obj: Any) -> list[Key]:
            return self._on_object(target, kind, obj)

        return deliver

    def _on_object(self, t: Target, kind: str, obj: Any) -> list[Key]:
        cached = self.objects[t.kind]
        if kind == "GONE":  # the kind is not served (any more)
            for who in [k for k in self.taken if k[0] == t.kind]:
                self._claim(who, frozenset())
            cached.clear()
            return []
        keys: list[Key] = []
        previous = dict(cached)
        if kind == "SYNC":
            self.listed.add(t.kind)
            cached.clear()
            for who in [k for k in self.taken if k[0] == t.kind]:
                self._claim(who, frozenset())
            seen = {_id(o) for o in obj}
            # Consumers that vanished while the watch was down: their sync finds them gone.
            keys += [
                ObjectKey(t.kind, ns, name) for ns, name in previous if (ns, name) not in seen and t.consumer
            ]
        for o in obj if kind == "SYNC" else [obj]:
            ident = _id(o)
            gone = kind == "DELETED"
            keys += self._claim((t.kind, *ident), frozenset() if gone else frozenset(t.taken(o)))
            if t.consumer and not gone and t.follows(o) is None and not t.has_record(o):
                gone = True  # neither follows nor carries clusterd's record: not clusterd's concern
            if gone:
                was = cached.pop(ident, None)
                if was is not None and t.consumer:
                    keys.append(ObjectKey(t.kind, *ident))  # its problem and its count go
                    owners = was["metadata"].get("ownerReferences") or []  # made for another: it plans again
                    keys += [
                        ObjectKey(t.kind, ident[0], r["name"]) for r in owners if r.get("kind") == t.kind
                    ]
                elif was is not None and (left := t.follows(was)) is not None:
                    keys.append(DynamicPrefixKey(left))  # objects made from this holder follow it
                continue
            cached[ident] = o
            old = previous.get(ident)
            stuck = ObjectKey(t.kind, *ident) in self.refused
            if old is not None and (_rv(old) == _rv(o) or (t.reads(old) == t.reads(o) and not stuck)):
                continue  # the echo of our own write, a relist, or a change clusterd does not read
            if t.consumer:
                keys.append(ObjectKey(t.kind, *ident))
                continue
            dp = t.follows(o)
            if old is not None and (left := t.follows(old)) not in (None, dp):
                keys.append(DynamicPrefixKey(left))  # a holder that left: objects made from it follow it
            if dp is not None:
                keys.append(DynamicPrefixKey(dp))
            elif t.has_record(o):
                keys.append(ObjectKey(t.kind, *ident))  # no longer follows: take back our entries
        return list(dict.fromkeys(keys))

    def get(self, key: ObjectKey) -> Obj | None:
        return self.objects[key.kind].get((key.namespace, key.name))

    def following(self, kind: str, dp: str) -> list[tuple[ObjectKey, Obj]]:
        """The objects of a kind that follow a DynamicPrefix, in a stable order."""
        t = self.targets[kind]
        return [(ObjectKey(kind, ns, name), o) for (ns, name), o in sorted(self.objects[kind].items(),
                key=lambda kv: (kv[0][0] or "", kv[0][1])) if t.follows(o) == dp]  # fmt: skip

    def all_taken(self, but: ObjectId | None = None) -> set[IPv6Address]:
        """Every address some object (but ``but``) holds, requests or holds back."""
        return set().union(*(v for k, v in self.taken.items() if k != but))

    def written(self, kind: str | None, planned: Obj, got: Obj) -> list[Key]:
        """Cache what a write returned, unless the watch brought a version after the one it was planned from.

        The watch can deliver the write's echo and another writer's later change (LB-IPAM writes a
        Service's and a pool's status) before the write returns; caching the older ``got`` then would
        plan every later write from a stale resourceVersion: a 409 each time, and no event to end it.
        ``kind`` None: a DynamicPrefix. Returns the objects to plan again: those that now claim an
        address with it.
        """
        store: dict[Any, Obj] = self.dps if kind is None else self.objects[kind]
        ident: Any = planned["metadata"]["name"] if kind is None else _id(planned)
        current = store.get(ident)
        if current is None or _rv(current) != _rv(planned):
            return []
        store[ident] = got
        return [] if kind is None else self._claim((kind, *ident), frozenset(self.targets[kind].taken(got)))

    def _claim(self, who: ObjectId, addresses: frozenset[IPv6Address]) -> list[Key]:
        """Record what ``who`` claims. Returns the followers now sharing an address with another
        object: clusterd's pick for one that LB-IPAM gave another Service before it saw the request
        must be picked again, and no change of the first Service's would say so."""
        before = self.taken.pop(who, frozenset())
        if addresses:
            self.taken[who] = addresses
        for a in before - addresses:
            self.claims[a].discard(who)
            if not self.claims[a]:
                del self.claims[a]
        shared: set[ObjectId] = set()
        for a in addresses - before:
            claimants = self.claims.setdefault(a, set())
            claimants.add(who)
            if len(claimants) > 1:
                shared |= claimants
        return [ObjectKey(*o) for o in sorted(shared, key=str)
                if self.targets[o[0]].consumer and (o[1], o[2]) in self.objects[o[0]]]  # fmt: skip
