"""What the DynamicPrefix's status says of the objects it keeps: ServicesSynced and status.targets. Pure."""

from __future__ import annotations

from clusterd.controller.cache import Cache
from clusterd.controller.keys import ObjectKey
from clusterd.core.services import NOT_SYNCED
from clusterd.crd import MAX_TARGETS, DynamicPrefixSpec, TargetStatus
from clusterd.targets.base import api_version

SHOWN_PROBLEMS = 10
"""Objects named in a condition's message; the rest are counted (each has its Event)."""
Condition = tuple[bool, str, str]
Problems = dict[ObjectKey, tuple[str, str]]
"""(reason, message) of each object not in step."""


def summarize(count: int, problems: dict[ObjectKey, tuple[str, str]]) -> Condition:
    """ServicesSynced from each object's (reason, message): the reason they share, else ServiceProblems."""
    if not problems:
        return True, "Synced", f"{count} Service(s) in step"
    reasons = {reason for reason, _ in problems.values()}
    reason = reasons.pop() if len(reasons) == 1 and NOT_SYNCED not in reasons else "ServiceProblems"
    shown = [f"{k.namespace}/{k.name}: {message}" for k, (_, message) in
             sorted(problems.items(), key=lambda kv: str(kv[0]))[:SHOWN_PROBLEMS]]  # fmt: skip
    more = len(problems) - len(shown)
    return False, reason, "; ".join(shown) + (f"; and {more} more (see the Services' Events)" if more else "")


def targets(cache: Cache, problems: Problems, dp: str, spec: DynamicPrefixSpec) -> list[TargetStatus]:
    """status.targets: each object kept for ``dp`` (Services only in HA mode), problems first."""
    out = []
    for t in cache.targets.values():
        if (version := cache.served.get(t.kind)) is None or (t.consumer and spec.transition.mode != "ha"):
            continue
        for key, _obj in cache.following(t.kind, dp):
            problem = problems.get(key)
            out.append(TargetStatus(kind=t.kind, api_version=api_version(t, version), name=key.name,
                                    namespace=key.namespace, synced=problem is None,
                                    problem=None if problem is None else problem[1][:1024]))  # fmt: skip
    return sorted(out, key=lambda s: s.synced)[:MAX_TARGETS]
