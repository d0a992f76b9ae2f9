"""The status planner: the steps in order, and the status built from what they return."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from clusterd.core.status.accept import Verdict, accept, routerd_record
from clusterd.core.status.apply import apply_report
from clusterd.core.status.conditions import conditions
from clusterd.core.status.history import advance_history
from clusterd.core.status.model import SOURCE_RA, Draft, Plan, Policy, Report, parse_time
from clusterd.core.status.place import place
from clusterd.crd import MAX_PRUNED, DynamicPrefixSpec, DynamicPrefixStatus


def plan(
    spec: DynamicPrefixSpec,
    status: DynamicPrefixStatus,
    report: Report | None,
    now: datetime,
    generation: int,
    policy: Policy | None = None,
    source_heard_at: datetime | None = None,
    environment_problem: tuple[str, str] | None = None,
) -> Plan:
    """The next status: accept -> apply the report -> advance the history -> place ranges and
    subnets -> conditions. ``now`` and times are naive UTC.

    ``source_heard_at`` is when the routerd run of :func:`routerd_record` was
    last heard from (the controller remembers it; heartbeats do not write the
    status). Without it that record's own ``receivedAt`` stands in.
    ``environment_problem`` is (reason, message) for something outside the
    object that keeps it from working (the RA listener is off); it sets Degraded.
    """
    policy = policy or Policy()
    verdict = Verdict() if report is None else accept(spec, status, report, now, policy, source_heard_at)
    draft = replace(Draft.of(status), events=verdict.events)
    if report is not None and verdict.rejection is None:
        draft = apply_report(draft, spec, status, report, now, policy)
    draft = advance_history(draft, spec, now)
    placement = place(spec, draft.current)
    conds = conditions(status.conditions, now, generation, spec, draft, placement, verdict.rejection,
                       reported=report is not None, environment_problem=environment_problem)  # fmt: skip
    history = list(draft.history.values())
    fallback = draft.source is not None and draft.source.kind == SOURCE_RA
    new_status = DynamicPrefixStatus(
        current_prefix=str(draft.current) if draft.current is not None else None,
        prefix_source=draft.prefix_source,
        lease_expires_at=next((h.valid_until for h in history if h.state == "active"), None),
        address_ranges=list(placement.ranges),
        subnets=list(placement.subnets),
        history=history,
        pruned=list(draft.pruned[-MAX_PRUNED:]),
        source=draft.source,
        # While RAs supply the prefix, the last routerd message applied still orders routerd's next ones.
        routerd_source=routerd_record(status) if fallback else None,
        observed_generation=generation,
        conditions=conds,
    )
    deadlines = [t for h in history if h.state == "draining" and (t := parse_time(h.valid_until)) is not None]
    return Plan(
        status=new_status,
        events=draft.events,
        next_check=min(deadlines) if deadlines else None,
        rejected=verdict.rejection,
    )
