"""clusterd's import boundary with routerd is a deliberate list.

The import-linter contract in pyproject.toml forbids every routerd module clusterd may not import;
a forbidden contract cannot say "only these", so this test checks that every routerd module is on
exactly one side: shared (below) or forbidden (the contract). A new routerd module fails it until
someone decides which side it is on.
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import routerd

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "clusterd imports only routerd's shared modules"

SHARED = {
    "routerd",
    "routerd.core",
    "routerd.core.backoff",
    "routerd.core.emitter",
    "routerd.core.ra",
    "routerd.core.ranges",
    "routerd.core.sequence",
    "routerd.core.tracker",
    "routerd.core.wire",
    "routerd.adapters",
    "routerd.adapters.mqttclient",
    "routerd.adapters.rawsock",
    "routerd.logs",
    "routerd.settings",
}
"""The routerd modules clusterd may import: the pure core, the RA socket and the shared helpers."""


def _forbidden() -> set[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["name"].startswith(CONTRACT)]
    assert contract["source_modules"] == ["clusterd"]
    return set(contract["forbidden_modules"])


def test_every_routerd_module_is_shared_or_forbidden() -> None:
    modules = {"routerd"} | {m.name for m in pkgutil.walk_packages(routerd.__path__, "routerd.")}
    forbidden = _forbidden()
    assert not SHARED & forbidden, "a module is both shared and forbidden"
    assert modules - SHARED - forbidden == set(), "new routerd modules: add each to SHARED or the contract"
    assert (SHARED | forbidden) - modules == set(), "listed modules that no longer exist"
