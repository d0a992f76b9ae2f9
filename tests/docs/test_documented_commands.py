"""What the docs tell a user to type or copy works: the standalone clusterd file.

Commands are taken from the markdown itself, so a doc that drifts from what
works fails here. Where a doc names the user's machine (``broker.lan``, port
8883, ``/etc/routerd/...``), the test substitutes the test broker's host, port
and files, and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from clusterd import config as clusterd_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)


def test_the_standalone_clusterd_example_is_a_valid_configuration_with_every_key(tmp_path: Path) -> None:
    (example,) = [b for b in code_blocks(DOCS / "clusterd.md") if b.startswith("# clusterd.yaml")]
    path = tmp_path / "clusterd.yaml"
    path.write_text(example)
    cfg = clusterd_config.load(path)
    assert cfg.mqtt is not None and cfg.webhook is not None
    keys = {f.alias or name for name, f in clusterd_config.Config.model_fields.items()}
    assert keys == set(yaml.safe_load(example)), "the example sets every top-level key"
