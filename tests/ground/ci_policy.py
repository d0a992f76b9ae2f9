"""Under ``CI=true`` nothing is skipped or expected to fail: a skip, an xfail or an xpass fails the run.

A pytest plugin (``tests/conftest.py`` loads it). The outcomes are counted
from the test reports themselves, not from the terminal reporter's tallies,
so the rule holds with ``-p no:terminal`` too. An xpass fails anyway where
``xfail_strict`` is set (pyproject.toml); this also covers a test that asks
for ``strict=False``.
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from tests.ground.require import in_ci


class CIPolicy:
    """Counts skips, xfails and xpasses, and turns a run that had any into a failed one."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def _count(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if hasattr(report, "wasxfail"):
            self.counts["xpassed" if report.passed else "xfailed"] += 1
        elif report.skipped:
            self.counts["skipped"] += 1

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._count(report)  # a module that skips itself

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._count(report)

    def verdict(self) -> str:
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        return f"CI=true: {found}; in CI nothing may be skipped or expected to fail"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.counts:
            terminalreporter.write_line(self.verdict(), red=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.counts:
            return
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if session.config.pluginmanager.get_plugin("terminalreporter") is None:
            print(self.verdict(), file=sys.stderr)


def pytest_configure(config: pytest.Config) -> None:
    if in_ci():
        config.pluginmanager.register(CIPolicy(), "dynamic-prefix-ci-policy")
