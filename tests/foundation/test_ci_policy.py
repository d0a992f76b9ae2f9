"""Under CI=true nothing is skipped or expected to fail: a missing component, a skip, an xfail or an xpass
fails the run, with or without the terminal reporter. On a developer machine they are reported, not failed."""

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

@pytest.mark.xfail(reason="known bug")
def test_expected_to_fail():
    assert False

@pytest.mark.xfail(reason="fixed since", strict=False)
def test_expected_to_fail_but_passes():
    pass

def test_fine():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return pytester


def run(inner: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    inner.makepyfile(source)
    return inner.runpytest_subprocess("-p", "tests.ground.ci_policy", "-p", "no:cacheprovider", *args)


def test_missing_component_skips_on_a_developer_machine(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = run(inner, INNER, "-rs")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1, xpassed=1)
    result.stdout.fnmatch_lines(["*missing the thing (apt install thing)*"])
    assert result.ret == 0


def test_missing_component_skip_xfail_and_xpass_fail_under_ci(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = run(inner, INNER)
    result.assert_outcomes(passed=1, failed=1, skipped=1, xfailed=1, xpassed=1)
    result.stdout.fnmatch_lines(["*CI=true and the test ground is incomplete: missing the thing*"])
    result.stdout.fnmatch_lines(["*CI=true: 1 skipped, 1 xfailed, 1 xpassed; in CI nothing may be skipped*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize(
    "source",
    [
        "import pytest\ndef test_skip():\n    pytest.skip('off')\n",
        "import pytest\n@pytest.mark.xfail(reason='bug')\ndef test_xfail():\n    assert False\n",
        "import pytest\n@pytest.mark.xfail(reason='bug', strict=False)\ndef test_xpass():\n    pass\n",
        "import pytest\npytest.skip('the whole module', allow_module_level=True)\n",
    ],
    ids=["skip", "xfail", "xpass", "module-skip"],
)
def test_each_fails_under_ci_without_the_terminal_reporter(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.setenv("CI", "true")
    result = run(inner, source, "-p", "no:terminal")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stderr.str()
    result.stderr.fnmatch_lines(["CI=true: 1 *; in CI nothing may be skipped or expected to fail"])


def test_a_clean_run_passes_under_ci_without_the_terminal_reporter(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = run(inner, "def test_fine():\n    pass\n", "-p", "no:terminal")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()


def test_this_suite_runs_with_xfail_strict(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.getini("xfail_strict") is True  # an xfail that passes is a failure everywhere
