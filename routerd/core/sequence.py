"""Sequence numbers that never go backwards, across restarts too.

Ordering by wall time is wrong on a router (it boots with a bad clock until NTP
syncs), so messages carry a sequence. It is persisted the hi/lo way: the
adapter writes a *reservation* to disk once per ``BLOCK`` numbers (a flash
write every thousand messages, not every message), and a restart resumes above
the last reservation. If the state file was lost, a wall clock that is
plausibly synced still puts the new run above the old one, because sequences
are seeded from milliseconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK = 1000
PLAUSIBLE_WALL_MS = 1_735_689_600_000
"""2025-01-01T00:00:00Z: a clock before this has not been synced."""
MAX_SEQUENCE = 2**53 - 1
"""JSON consumers in JavaScript read integers exactly only up to here."""


@dataclass
class SequenceAllocator:
    """Hands out increasing numbers; says when a new reservation must be persisted."""

    next_value: int
    reserved: int
    """Numbers below this may be used without persisting anything first."""

    @classmethod
    def resume(cls, persisted: int | None, wall_ms: int) -> SequenceAllocator:
        """Start above everything a previous run may have used."""
        start = persisted or 0
        if wall_ms >= PLAUSIBLE_WALL_MS:
            start = max(start, wall_ms)
        return cls(next_value=start, reserved=start)

    def take(self) -> tuple[int, int | None]:
        """Return (sequence, reservation to persist before publishing it, or None)."""
        value = self.next_value
        if value >= MAX_SEQUENCE:
            raise OverflowError("sequence exhausted; delete the state file and restart routerd")
        self.next_value += 1
        if value >= self.reserved:
            self.reserved = value + BLOCK
            return value, self.reserved
        return value, None
