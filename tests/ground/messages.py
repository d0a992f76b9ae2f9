"""routerd-shaped prefix-state messages for tests that stand in for routerd (or attack clusterd)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

from routerd.core.wire import SCHEMA_ID

BOOT = "0123456789abcdef"


def prefix(
    p: str, state: str = "preferred", valid: int | None = 86400, preferred: int | None = 14400
) -> dict[str, Any]:
    if state != "preferred":
        preferred = 0
    return {
        "prefix": p,
        "state": state,
        "validLifetime": valid,
        "preferredLifetime": preferred,
        "sources": ["ra"],
    }


def state(
    router: str, interface: str, sequence: int, *prefixes: dict[str, Any], boot: str = BOOT
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_ID,
        "version": 1,
        "router": router,
        "interface": interface,
        "boot": boot,
        "sequence": sequence,
        "observedAt": "2026-11-26T12:00:00Z",
        "prefixes": list(prefixes),
    }


def sign(secret: bytes, body: bytes, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Dynamic-Prefix-Timestamp": str(ts),
        "X-Dynamic-Prefix-Signature": f"sha256={mac}",
    }


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST and return (status, text), whatever the status."""
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310 - test URL
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post_state(url: str, secret: bytes, doc: dict[str, Any]) -> tuple[int, str]:
    body = json.dumps(doc).encode()
    return post(url, body, sign(secret, body))
