"""Under CI=true nothing is skipped: a missing component fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

INNER = """
import pytest
from tests.ground.require import missing

def test_needs_a_thing():
    missing("the thing (apt install thing)")

def test_plain_skip():
    pytest.skip("no reason given")
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import pytest_sessionfinish, pytest_terminal_summary\n")
    pytester.makepyfile(INNER)
    return pytester


def test_missing_component_skips_on_a_developer_machine(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = inner.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*missing the thing (apt install thing)*"])
    assert result.ret == 0


def test_missing_component_and_any_skip_fail_under_ci(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*CI=true and the test ground is incomplete: missing the thing*"])
    result.stdout.fnmatch_lines(["*1 test(s) skipped; in CI nothing may be skipped*"])
    assert result.ret != 0
