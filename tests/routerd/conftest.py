"""routerd's tests: every test here is marked ``router`` and also runs on OpenWrt's package versions."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/routerd/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.router)
