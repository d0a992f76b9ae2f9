"""Step 3, advance the history: active -> draining -> expired -> pruned.

A previous prefix drains until its valid lifetime ends, then is expired; past
``maxPrefixHistory`` previous prefixes the oldest are pruned, and a pruned
prefix stays out while the router still lists it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Literal

from clusterd.core.status.model import Draft, Event, parse_time
from clusterd.crd import DynamicPrefixSpec, HistoryEntry
from routerd.core.wire import timestamp as rfc3339


def advance_history(draft: Draft, spec: DynamicPrefixSpec, now: datetime) -> Draft:
    """``draft`` with each entry's state moved on to ``now`` and the history cut to its length."""
    events: list[Event] = []
    entries: list[HistoryEntry] = []
    for h in draft.history.values():
        if draft.current is not None and h.prefix == str(draft.current):
            entries.append(h.model_copy(update={"state": "active", "deprecated_at": None}))
            continue
        until = parse_time(h.valid_until)
        state: Literal["draining", "expired"] = "draining" if until is None or until > now else "expired"
        if h.state != "expired" and state == "expired":
            events.append(
                Event("Normal", "PrefixExpired", f"{h.prefix}: valid lifetime ended; pools drop it")
            )
        entries.append(
            h.model_copy(update={"state": state, "deprecated_at": h.deprecated_at or rfc3339(now)})
        )
    active = [h for h in entries if h.state == "active"]
    # Newest first by when clusterd saw each prefix stop being current (or first saw it already
    # deprecated), a time set once; equal times keep the order the prefixes entered the history.
    previous = sorted((h for h in entries if h.state != "active"), key=lambda h: h.deprecated_at or "",
                      reverse=True)  # fmt: skip
    keep = spec.transition.max_prefix_history
    pruned = list(draft.pruned)
    for dropped in previous[keep:]:
        if dropped.state == "draining":
            why = f"{dropped.prefix}: more than maxPrefixHistory={keep} previous prefixes; pools drop it"
            events.append(Event("Normal", "PrefixPruned", why))
        if dropped.prefix not in pruned:
            pruned.append(dropped.prefix)
    if draft.listed is not None:
        pruned = [x for x in pruned if x in draft.listed]  # the router no longer lists it: forget it
    return replace(
        draft,
        history={h.prefix: h for h in active + previous[:keep]},
        pruned=tuple(pruned),
        events=(*draft.events, *events),
    )
