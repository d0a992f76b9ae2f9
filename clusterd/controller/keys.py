"""Typed work keys: what the work queue holds, and what each kind of work is about."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DynamicPrefixKey:
    """Reconcile a DynamicPrefix: its status, its holders, its consumers."""

    name: str


@dataclass(frozen=True)
class RolloutKey:
    """The second half of a DynamicPrefix's pass: its consumers, its holders' final lists, its conditions.

    Queued by the first half (status, holders' grow, the webhook answer): with several
    DynamicPrefixes, every first half -- what a webhook sender waits for -- comes before
    any DynamicPrefix's thousands of Service writes.
    """

    name: str


@dataclass(frozen=True)
class ServicesSyncedKey:
    """Recount one DynamicPrefix's ServicesSynced condition from what each Service's own sync found.

    Cheap: nothing is planned again. A Service whose problem comes or goes (LB-IPAM gave it
    an address) needs only this, not a pass over every other Service.
    """

    name: str


@dataclass(frozen=True)
class ObjectKey:
    """Sync one object of a target kind on its own (a Service, or a holder clusterd must release)."""

    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


Key = DynamicPrefixKey | RolloutKey | ServicesSyncedKey | ObjectKey
