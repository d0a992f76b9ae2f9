"""The status planner: (spec, status, report, now) -> the next status and the Events to send.

Pure. A *report* is one prefix-state message (from routerd over MQTT or the
webhook, or clusterd's own RA listener). :func:`plan` runs it through named
steps, each a small pure function in its own module:

1. ``accept``     may it be applied (sequence order, fallback rules)? else a typed :class:`Rejection`
2. ``apply``      which prefix becomes current, which source is recorded
3. ``history``    active -> draining -> expired -> pruned
4. ``place``      the address ranges and subnets in the current prefix
5. ``conditions`` what PrefixAcquired and Degraded say

Everything that must survive a restart lives in the status it returns;
nothing here keeps memory between calls.
"""

from clusterd.core.status.accept import routerd_record
from clusterd.core.status.conditions import (
    DEGRADED,
    POOLS_SYNCED,
    PREFIX_ACQUIRED,
    SERVICES_SYNCED,
    with_condition,
)
from clusterd.core.status.model import (
    SOURCE_RA,
    SOURCE_ROUTERD,
    Event,
    Plan,
    Policy,
    Refusal,
    Rejection,
    Report,
    parse_time,
    published_at,
)
from clusterd.core.status.pipeline import plan
from clusterd.core.status.place import placed_ranges, placed_subnets

__all__ = [
    "DEGRADED",
    "POOLS_SYNCED",
    "PREFIX_ACQUIRED",
    "SERVICES_SYNCED",
    "SOURCE_RA",
    "SOURCE_ROUTERD",
    "Event",
    "Plan",
    "Policy",
    "Refusal",
    "Rejection",
    "Report",
    "parse_time",
    "placed_ranges",
    "placed_subnets",
    "plan",
    "published_at",
    "routerd_record",
    "with_condition",
]
