"""Which state a command hook runs with next, and when.

A hook runs when an interface's prefixes or their states change, and once
for each interface after start; a heartbeat that only refreshes lifetimes
does not run it again. One run at a time per hook: a state that arrives while
the hook runs waits for it, and replaces any older state of its interface
still waiting, so the hook never gets a state after a newer one. A failed
run is retried with :class:`~routerd.core.backoff.Backoff`; a changed state
for that interface ends the wait at once (the retry runs with it). Pure: the
adapter passes ``now`` and runs the process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

from routerd.core.backoff import Backoff
from routerd.core.wire import PrefixState, PrefixStatus, SourceKind

Essence = tuple[tuple[IPv6Network, PrefixStatus, tuple[SourceKind, ...], tuple[IPv6Address, ...]], ...]


def essence(msg: PrefixState) -> Essence:
    """What a hook acts on: the prefixes, their states and who vouches for them, not the countdowns."""
    return tuple((p.prefix, p.state, p.sources, p.routers) for p in msg.prefixes)


@dataclass
class HookQueue:
    """The newest state per interface, what the hook last acted on, and when each may run next."""

    backoff: Callable[[], Backoff] = Backoff
    running: PrefixState | None = None
    failures: int = 0
    """Consecutive failed runs (any interface); 0 after a success."""
    _latest: dict[str, PrefixState] = field(default_factory=dict)
    _have: dict[str, Essence] = field(default_factory=dict)
    """What the hook's last successful run for each interface set up; gone after a failure."""
    _due: dict[str, float] = field(default_factory=dict)
    _failed: set[str] = field(default_factory=set)
    _backoffs: dict[str, Backoff] = field(default_factory=dict)

    def offer(self, msg: PrefixState, now: float) -> None:
        """A published state; a changed one may run at once, even while a retry waits."""
        previous = self._latest.get(msg.interface)
        self._latest[msg.interface] = msg  # whatever runs next for it runs with this
        if previous is None or essence(previous) != essence(msg):
            self._due[msg.interface] = now

    def _needed(self, iface: str) -> bool:
        return self._have.get(iface) != essence(self._latest[iface])

    def take(self, now: float) -> PrefixState | None:
        """The state to run with now (marked running), or None: a run is under way, or nothing is due."""
        if self.running is not None:
            return None
        ready = sorted((d, i) for i, d in self._due.items() if d <= now and self._needed(i))
        if not ready:
            return None
        self.running = self._latest[ready[0][1]]
        return self.running

    def finished(self, ok: bool, now: float) -> None:
        """The run :meth:`take` started ended; a failure waits out its backoff unless the state changed."""
        msg = self.running
        assert msg is not None, "finished() without take()"
        self.running = None
        iface = msg.interface
        backoff = self._backoffs.setdefault(iface, self.backoff())
        changed = essence(self._latest[iface]) != essence(msg)
        if ok:
            self.failures = 0
            backoff.reset()
            self._failed.discard(iface)
            self._have[iface] = essence(msg)
        else:
            self.failures += 1
            self._failed.add(iface)
            self._have.pop(iface, None)  # a failed run may have done half of its work
        if changed:
            return  # offer() made the newer state due at once
        if ok:
            self._due.pop(iface, None)
        else:
            self._due[iface] = now + backoff.next()

    def queued(self) -> int:
        """Interfaces whose newest state the hook has not acted on successfully yet."""
        return sum(self._needed(i) for i in self._latest)

    def next_due(self) -> float | None:
        """When :meth:`take` has something next (None while a run is under way, or with nothing to do)."""
        if self.running is not None:
            return None
        return min((d for i, d in self._due.items() if self._needed(i)), default=None)

    def next_retry(self) -> float | None:
        """When the earliest retry of a failed run is due, or None."""
        return min((self._due[i] for i in self._failed if i in self._due), default=None)
