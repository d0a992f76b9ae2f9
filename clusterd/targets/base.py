"""The target interface: one kind of object clusterd keeps in step with a DynamicPrefix. Pure.

A target says which objects it manages (they name a DynamicPrefix in an
annotation), which API versions of its kind clusterd may use (discovered from
the served CRD), what to write to one object (``desired``, a :class:`Plan`),
the RBAC it needs and the label its writes are counted under. The controller
reads the objects, asks the target, writes the plan and reports the outcome;
it knows no kind by name.

A renumbering is written in two steps around the *consumers* (Services, which
request addresses): every *holder* (a pool) writes its ``grow`` first, then
the consumers move, then the holders write their ``final`` list, so no
consumer ever requests an address no holder has (Cilium's ``no_pool`` does
not clear once set) and no holder drops an address still in use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any, Protocol

from clusterd.core.placements import Placements
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus

NAME = "dynamic-prefix.io/name"
"""The annotation by which an object follows a DynamicPrefix, on every kind."""
ObjectId = tuple[str, str | None, str]
"""(kind, namespace, name) of an object a target follows."""


@dataclass(frozen=True)
class Rule:
    """What a target needs of RBAC: ``verbs`` on ``resource`` in API group ``group`` ("" is core)."""

    group: str
    resource: str
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class Patch:
    """One write to one object, made at the resourceVersion it was planned from.

    ``field``/``entries`` set one list under ``spec`` (None: spec untouched); ``spec``
    merges fields into ``spec`` instead (a scalar such as ``disabled``);
    ``annotations`` set or (None) delete annotations, clusterd's ownership record among them.
    """

    annotations: Mapping[str, str | None]
    field: str | None = None
    entries: list[Any] | None = None
    spec: Mapping[str, Any] | None = None
    """Fields of ``spec`` to set (a NetworkPolicy's ``ingress`` and ``egress``, a Calico pool's ``disabled``)."""


@dataclass(frozen=True)
class Create:
    """Create a whole object (clusterd's own: a BGP advertisement per subnet, a Calico pool per CIDR)."""

    body: dict[str, Any]
    source: Mapping[str, Any] | None = None
    """The object it is made from (a Calico parent pool): a refusal is shown there, and the create is
    not tried again until it changes."""


@dataclass(frozen=True)
class Delete:
    """Delete the object planned from, at its resourceVersion (404 counts as done)."""


Write = Patch | Create | Delete


@dataclass(frozen=True)
class Plan:
    """What one object should get; empty when it is in step."""

    grow: Patch | None = None
    """A holder's first step, written before the consumers move: only adds."""
    final: Write | None = None
    """The last write (a holder's shrink, a consumer's only write)."""
    problem: str | None = None
    """What keeps the object from being in step; shown in a condition and an Event."""
    reason: str = "NotSynced"
    waiting: bool = False
    """Nothing to do until another controller acts (LB-IPAM giving an address): not a warning."""
    chosen: tuple[IPv6Address, ...] = ()
    """Addresses picked for this object that no other object may get in the same pass."""
    summary: str = ""
    """One line for the Event that says what was written."""
    also: tuple[Create, ...] = ()
    """Objects made for this one, created after its ``final`` write (a Service's companions)."""


@dataclass
class Context:
    """What a planner may need beyond the DynamicPrefix and the object, computed once per pass."""

    placements: Placements | None
    """The DynamicPrefix's ranges placed in its prefixes (None: no DynamicPrefix)."""
    taken: Callable[[ObjectId | None], AbstractSet[IPv6Address]] = lambda but: frozenset()
    """Addresses held or requested anywhere in the cluster but by ``but`` (gathered only when a
    planner asks)."""
    default_ip_annotation: str = "cilium"
    chosen: set[IPv6Address] = field(default_factory=set)
    """Picked earlier in this pass, not written yet."""
    owner: Mapping[str, Any] | None = None
    """The DynamicPrefix itself (for ownerReferences on objects clusterd creates)."""
    following: Callable[[str], list[Mapping[str, Any]]] = lambda kind: []
    """The objects of a kind that follow the DynamicPrefix (a BGP advertisement reads the pools, a
    Calico pool its parent)."""
    get: Callable[[ObjectId], Mapping[str, Any] | None] = lambda oid: None
    """An object clusterd follows or keeps, by (kind, namespace, name) (a companion's original)."""
    default_ha_mode: str = "auto"
    """HA mode: ``companion``, ``addresses`` or ``auto``, unless a Service says otherwise."""


class Target(Protocol):
    """One kind of object clusterd writes; see docs/architecture.md, "Adding a target"."""

    @property
    def kind(self) -> str: ...
    @property
    def group(self) -> str:
        """API group ("" for the core group)."""

    @property
    def plural(self) -> str: ...
    @property
    def versions(self) -> tuple[str, ...]:
        """The versions clusterd can write, preferred first; the first one served is used."""

    @property
    def crd(self) -> bool:
        """Served through a CustomResourceDefinition (discovered from its watch); else built in."""

    @property
    def consumer(self) -> bool:
        """Requests addresses (planned one object at a time, between the holders' two steps)."""

    @property
    def whole(self) -> bool:
        """Every object that follows is clusterd's own (made by ``creates``, owned by the DynamicPrefix):
        no pool kind, and nothing to report when the DynamicPrefix goes (the garbage collector deletes them)."""

    @property
    def metric(self) -> str:
        """The ``resource`` label of its API writes."""

    @property
    def rules(self) -> tuple[Rule, ...]: ...

    def follows(self, obj: Mapping[str, Any]) -> str | None:
        """The DynamicPrefix this object follows, if any."""

    def has_record(self, obj: Mapping[str, Any]) -> bool:
        """Whether clusterd wrote to it before (so it has something to take back)."""

    def taken(self, obj: Mapping[str, Any]) -> AbstractSet[IPv6Address]:
        """Addresses this object holds, requests or holds back: clusterd chooses none of them."""

    def reads(self, obj: Mapping[str, Any]) -> object:
        """The parts of the object the planner reads: a change elsewhere (a status clusterd
        never reads) needs no planning."""

    def desired(
        self,
        spec: DynamicPrefixSpec | None,
        status: DynamicPrefixStatus | None,
        obj: Mapping[str, Any],
        ctx: Context,
    ) -> Plan:
        """What to write; ``spec`` None: the object no longer follows a DynamicPrefix (release it)."""

    def creates(self, spec: DynamicPrefixSpec, status: DynamicPrefixStatus, ctx: Context) -> list[Create]:
        """The objects clusterd itself keeps for a DynamicPrefix, whole: created when missing, in each
        holders' step (before the consumers move); [] for kinds users create and clusterd only edits."""


class Edited:
    """For kinds users create and clusterd only edits (pools, Services, NetworkPolicies)."""

    whole = False

    def creates(self, spec: DynamicPrefixSpec, status: DynamicPrefixStatus, ctx: Context) -> list[Create]:
        return []  # users create these; clusterd edits them


def crd_name(t: Target) -> str:
    return f"{t.plural}.{t.group}"


def crd_versions(crd: Mapping[str, Any]) -> frozenset[str]:
    """The versions a CRD serves now (Cilium 1.18+ serves pools as v2, older ones as v2alpha1)."""
    return frozenset(v["name"] for v in crd.get("spec", {}).get("versions", []) if v.get("served"))


def aggregated(t: Target) -> Mapping[str, str]:
    """Version -> API group of the versions of a kind another API server serves (Calico's
    ``projectcalico.org/v3``), found by their APIService rather than a CRD; most kinds have none."""
    found: tuple[tuple[str, str], ...] = getattr(t, "aggregated", ())
    return dict(found)


def api_group(t: Target, version: str) -> str:
    """The API group a kind is written through at ``version``."""
    return aggregated(t).get(version, t.group)


def api_version(t: Target, version: str) -> str:
    """``group/version`` (``v1`` alone for the core group)."""
    return f"{api_group(t, version)}/{version}".lstrip("/")


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}
