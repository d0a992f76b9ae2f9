"""Exponential backoff with jitter, the one both programs use.

routerd's webhook and command-hook retries and clusterd's per-key work-queue
limiter all space their attempts with this: ``base * 2**n`` capped at ``cap``,
scaled by a random factor in 0.5..1 so that many retriers started by one event
(a broker restart, an API server coming back) do not retry in lock-step.
Pure: the caller sleeps and supplies the random source when a test needs one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for consecutive failures; :meth:`reset` after a success."""

    base: float = 1.0
    cap: float = 300.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempts)
        self.attempts += 1
        return float(delay * self.rng.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.attempts = 0
