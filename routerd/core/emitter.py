"""When to publish, and the message to publish.

A change is published at once (the latency target is milliseconds); further
changes within ``hold_down`` seconds are coalesced into one message at the end
of the window, so a flapping prefix costs a bounded number of messages. With
no change, a heartbeat re-publishes the state every ``heartbeat`` seconds with
fresh remaining lifetimes (and proves routerd is alive). Lifetime refreshes
alone never publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from routerd.core.tracker import PrefixView
from routerd.core.wire import Prefix, PrefixState


@dataclass(frozen=True)
class EmitPolicy:
    hold_down: float = 2.0
    """Seconds after a publish during which further changes are coalesced."""
    heartbeat: float = 300.0
    """Seconds between re-publishes of an unchanged state."""


@dataclass
class _Stream:
    last: float
    pending: bool = False


@dataclass
class Emitter:
    """Per-interface publish timing. Pure: ``now`` comes from the caller."""

    policy: EmitPolicy = field(default_factory=EmitPolicy)
    _streams: dict[str, _Stream] = field(default_factory=dict)

    def changed(self, interface: str, now: float) -> bool:
        """A change happened: True means publish now, False means it is scheduled."""
        s = self._streams.get(interface)
        if s is None or now - s.last >= self.policy.hold_down:
            return True
        s.pending = True
        return False

    def published(self, interface: str, now: float) -> None:
        self._streams[interface] = _Stream(last=now)

    def due(self, now: float) -> list[str]:
        """Interfaces whose coalesced change or heartbeat is due at ``now``."""
        return sorted(i for i, s in self._streams.items() if now >= self._deadline(s))

    def next_deadline(self) -> float | None:
        return min((self._deadline(s) for s in self._streams.values()), default=None)

    def _deadline(self, s: _Stream) -> float:
        return s.last + (self.policy.hold_down if s.pending else self.policy.heartbeat)


def message(
    *,
    router: str,
    interface: str,
    boot: str,
    sequence: int,
    observed_at: str,
    views: tuple[PrefixView, ...],
) -> PrefixState:
    """The wire message for one interface's views."""
    return PrefixState(
        router=router,
        interface=interface,
        boot=boot,
        sequence=sequence,
        observed_at=observed_at,
        prefixes=tuple(
            Prefix(
                prefix=v.prefix,
                state=v.state,
                valid_lifetime=v.valid,
                preferred_lifetime=v.preferred,
                sources=v.sources,
                routers=v.routers,
            )
            for v in views
        ),
    )
