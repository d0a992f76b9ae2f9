"""Generated references (docs/wire-schema.json, docs/configuration.md) match the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_docs_are_current() -> None:
    spec = importlib.util.spec_from_file_location("gendocs", ROOT / "scripts" / "gendocs.py")
    assert spec is not None and spec.loader is not None
    gendocs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gendocs)
    stale = [p for p, render in gendocs.TARGETS.items() if not p.exists() or p.read_text() != render()]
    assert not stale, f"stale: {stale}; run: python scripts/gendocs.py"
