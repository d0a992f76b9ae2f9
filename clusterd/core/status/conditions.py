"""Step 5, conditions: what PrefixAcquired and Degraded say (PoolsSynced and ServicesSynced
are kept; the controller sets them after it wrote the pools and Services).

A condition's transition time moves only when its status does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from clusterd.core.status.model import Draft, Refusal, Rejection
from clusterd.core.status.place import Placement
from clusterd.crd import Condition, DynamicPrefixSpec, DynamicPrefixStatus
from routerd.core.wire import timestamp as rfc3339

PREFIX_ACQUIRED = "PrefixAcquired"
POOLS_SYNCED = "PoolsSynced"
SERVICES_SYNCED = "ServicesSynced"
DEGRADED = "Degraded"
ORDER = (PREFIX_ACQUIRED, POOLS_SYNCED, SERVICES_SYNCED, DEGRADED)
_REFUSALS = {r.value: r for r in Refusal}


@dataclass
class Conditions:
    """A status's conditions being rewritten: each is set anew or kept as it was."""

    now: datetime
    generation: int
    old: dict[str, Condition]
    new: dict[str, Condition] = field(default_factory=dict)

    @classmethod
    def of(cls, conditions: Sequence[Condition], now: datetime, generation: int) -> Conditions:
        return cls(now, generation, {c.type: c for c in conditions})

    def set(self, type_: str, status: Literal["True", "False", "Unknown"], reason: str, message: str) -> None:
        prev = self.old.get(type_)
        changed = prev is None or prev.status != status
        self.new[type_] = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=rfc3339(self.now) if changed or prev is None else prev.last_transition_time,
            observed_generation=self.generation,
        )

    def keep(self, type_: str) -> None:
        if type_ in self.old:
            self.new[type_] = self.old[type_]

    def ordered(self) -> list[Condition]:
        return sorted(
            self.new.values(), key=lambda c: (ORDER.index(c.type) if c.type in ORDER else 99, c.type)
        )


def conditions(
    old: Sequence[Condition],
    now: datetime,
    generation: int,
    spec: DynamicPrefixSpec,
    draft: Draft,
    placement: Placement,
    rejection: Rejection | None,
    *,
    reported: bool,
    environment_problem: tuple[str, str] | None,
) -> list[Condition]:
    """The conditions after this pass; ``reported`` says whether a report was planned at all."""
    conds = Conditions.of(old, now, generation)
    _prefix_acquired(conds, spec, draft)
    conds.keep(POOLS_SYNCED)
    conds.keep(SERVICES_SYNCED)
    _degraded(conds, spec, placement, rejection, reported, environment_problem)
    return conds.ordered()


def with_condition(
    status: DynamicPrefixStatus,
    now: datetime,
    generation: int,
    type_: str,
    ok: bool,
    reason: str,
    message: str,
) -> DynamicPrefixStatus:
    """``status`` with one condition set (its transition time moves only when its status does)."""
    conds = Conditions.of(status.conditions, now, generation)
    for c in status.conditions:
        conds.keep(c.type)
    conds.set(type_, "True" if ok else "False", reason, message)
    return status.model_copy(update={"conditions": conds.ordered()})


def _prefix_acquired(conds: Conditions, spec: DynamicPrefixSpec, draft: Draft) -> None:
    source = draft.source
    if draft.current is not None:
        how = (
            f"{source.router}/{source.interface}"
            if source and source.router
            else (source.interface if source else "")
        )
        conds.set(
            PREFIX_ACQUIRED, "True", "Acquired", f"{draft.current} from {draft.prefix_source} {how}".strip()
        )
    elif draft.history:
        conds.set(PREFIX_ACQUIRED, "False", "NoPreferredPrefix",
                  "the source lists no usable preferred prefix; previous prefixes keep draining")  # fmt: skip
    else:
        conds.set(PREFIX_ACQUIRED, "False", "WaitingForPrefix", _waiting_message(spec))


def _degraded(
    conds: Conditions,
    spec: DynamicPrefixSpec,
    placement: Placement,
    rejection: Rejection | None,
    reported: bool,
    environment_problem: tuple[str, str] | None,
) -> None:
    """The first of: a range that does not fit, a problem outside the object, a regressed
    sequence (kept until a message from the new run is accepted), PD-only acquisition."""
    a = spec.acquisition
    only_pd = (
        a.dhcpv6pd is not None
        and a.routerd is None
        and (a.router_advertisement is None or not a.router_advertisement.enabled)
    )
    if placement.problems:
        conds.set(DEGRADED, "True", "RangeOutsidePrefix", "; ".join(placement.problems))
    elif environment_problem is not None:
        conds.set(DEGRADED, "True", *environment_problem)
    elif rejection is not None and rejection.kind is Refusal.SEQUENCE_REGRESSED:
        conds.set(DEGRADED, "True", rejection.kind.value, rejection.message)
    elif not reported and standing_refusal(conds.old.get(DEGRADED)) is Refusal.SEQUENCE_REGRESSED:
        conds.keep(DEGRADED)
    elif only_pd:
        conds.set(DEGRADED, "True", "DHCPv6PDNotSupported",
                  "clusterd is not a DHCPv6 client: run routerd on the router with its DHCPv6 hook "
                  "and add spec.acquisition.routerd")  # fmt: skip
    else:
        conds.set(DEGRADED, "False", "AsExpected", "")


def standing_refusal(degraded: Condition | None) -> Refusal | None:
    """The refusal a stored Degraded condition reports, read back from its reason (the status
    is the only memory between passes)."""
    return None if degraded is None else _REFUSALS.get(degraded.reason)


def _waiting_message(spec: DynamicPrefixSpec) -> str:
    a = spec.acquisition
    if a.routerd is not None:
        return f"waiting for a message from routerd {a.routerd.router}/{a.routerd.interface}"
    if a.router_advertisement is not None and a.router_advertisement.enabled:
        return f"waiting for a Router Advertisement on {a.router_advertisement.interface}"
    return "no enabled acquisition source"
