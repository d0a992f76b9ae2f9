"""Webhook request checks: HMAC signature, timestamp window, replays. Pure.

The signature is routerd's: ``sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``
(docs/wire-protocol.md). A signature seen once inside the window is a replay;
outside the window the timestamp check refuses it anyway, so the replay cache
only has to remember one window's worth of signatures.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass, field

from routerd.core.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign


class AuthError(Exception):
    """Why a request was refused; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ReplayCache:
    """Signatures seen within the window, oldest first, bounded."""

    window: float
    capacity: int = 10_000
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def check_and_add(self, signature: str, now: float) -> bool:
        """False if ``signature`` was seen within the window (a replay)."""
        while self._seen:
            sig, at = next(iter(self._seen.items()))
            if now - at <= self.window and len(self._seen) < self.capacity:
                break
            del self._seen[sig]
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


def verify(
    secrets: list[bytes],
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window: float,
    replays: ReplayCache,
) -> None:
    """Raise :class:`AuthError` unless the request is signed, fresh and new.

    Several secrets may be valid at once (rotation: add the new one, move
    routers over, remove the old one).
    """
    if not timestamp or not signature:
        raise AuthError(401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise AuthError(400, f"{TIMESTAMP_HEADER} {timestamp[:20]!r} is not Unix seconds") from None
    if not any(hmac.compare_digest(sign(s, timestamp, body), signature) for s in secrets):
        raise AuthError(401, "bad signature: check the shared secret on both sides")
    if abs(now - ts) > window:
        raise AuthError(
            401,
            f"timestamp {ts} is {int(now - ts)} s from clusterd's clock (window {int(window)} s): "
            "check NTP on the router",
        )
    if not replays.check_and_add(signature, now):
        raise AuthError(409, "replayed request: this signature was already accepted")
