"""Logging: plain text or JSON lines on stderr, and a rate limiter for bad input.

Bad input (a rogue RA, a malformed packet) can arrive many times a second; it
is logged once, then at most once a minute per reason with how many were
suppressed. Every occurrence is still counted.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from typing import Any

LOG = logging.getLogger("routerd")


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = getattr(record, "fields", {})
        return base + "".join(f" {k}={v}" for k, v in fields.items())


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JSONFormatter()
        if fmt == "json"
        else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def kv(**fields: Any) -> dict[str, Any]:
    """``extra=`` for structured fields: LOG.info("...", extra=kv(interface="eth0"))."""
    return {"fields": fields}


class RateLimited:
    """Log each reason at most once per ``interval`` seconds; count every occurrence."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, reason: str, message: str, **fields: Any) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._suppressed[reason] += 1
            return
        suppressed = self._suppressed.pop(reason, 0)
        self._last[reason] = now
        if suppressed:
            fields["suppressed"] = suppressed
        self.logger.warning(message, extra=kv(reason=reason, **fields))
