"""Fixtures shared by the clusterd tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import Clusterd


@pytest.fixture
def clusterd_factory(cluster: KubeAPI, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start clusterd processes (``Clusterd`` keyword arguments); all are stopped after the test."""
    started: list[Clusterd] = []

    def make(**kw: Any) -> Clusterd:
        cd = Clusterd(cluster, tmp_path / f"clusterd-{len(started)}", **kw)
        started.append(cd)
        return cd

    yield make
    for cd in started:
        cd.stop()
