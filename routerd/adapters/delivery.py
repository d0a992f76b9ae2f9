"""What a sink tells ``routerd status`` and the log about getting its messages through.

Each sink keeps a :class:`Delivery`: whether it is connected (MQTT), when a
message last got through, the last error in words that point at the fix
(:func:`explain`), so a broker that is gone shows up as ``ok: false`` with
its cause instead of a healthy-looking status.
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def explain(exc: BaseException, host: str, port: int, *, ca_file: Path | None, setting: str) -> str:
    """Why a connection to ``host:port`` failed; ``setting`` names the config section to fix."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host} ({exc.strerror}): check {setting}'s host name and this host's DNS"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS verification of {host} failed ({exc.reason}: {exc.verify_message}) against "
            f"{ca_file or 'the system CAs'}: set {setting}.ca_file to the CA that signed its certificate"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {host}:{port} failed ({exc.reason or exc}): is {port} a TLS port?"
    if isinstance(exc, ConnectionRefusedError):
        return f"{host}:{port} refused the connection: nothing listens there (server down, or the wrong port)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {host}:{port} (timed out): a firewall drops it, or the address is wrong"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{host}:{port} is unreachable ({exc.strerror}): no route to it from here"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {host}:{port}: {exc.strerror}"
    return f"cannot connect to {host}:{port}: {exc}"


@dataclass
class Delivery:
    """One sink's delivery record; times are ``time.monotonic()`` (paho's thread writes it too)."""

    target: str
    connected: bool | None = None
    """None for sinks without a connection (webhook, stdout)."""
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def succeeded(self) -> None:
        self.last_success = time.monotonic()

    def failed(self, reason: str) -> None:
        self.last_error = reason
        self.last_error_at = time.monotonic()

    def problem(self, now: float, window: float, started: float) -> str | None:
        """Why this sink is not delivering, or None when it is (or has had no time to yet)."""
        error = self.last_error_at is not None and (
            self.last_success is None or self.last_error_at >= self.last_success
        )
        if self.connected is False:
            return f"not connected to {self.target}" + (f": {self.last_error}" if error else "")
        if error:
            return f"{self.target}: {self.last_error}"
        if self.last_success is None:
            return None if now - started <= window else f"{self.target}: nothing delivered since start"
        if now - self.last_success > window:
            return f"{self.target}: nothing delivered for {now - self.last_success:.0f} s"
        return None

    def report(self, now: float, queued: int) -> dict[str, Any]:
        """The sink's entry in ``routerd status``."""

        def ago(t: float | None) -> float | None:
            return None if t is None else round(now - t, 1)

        return {
            "target": self.target,
            "connected": self.connected,
            "last_success_ago": ago(self.last_success),
            "last_error": self.last_error,
            "last_error_ago": ago(self.last_error_at),
            "queued": queued,
        }
