"""scripts/run in a fresh clone: one progress line per install step, no build warnings, then routerd.

And the clusterd it installs alongside (routerd's extra only) says in one line what to install.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.packaging.conftest import clone

pytestmark = pytest.mark.packaging


@pytest.fixture(scope="module")
def run_help(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    src = clone(tmp_path_factory.mktemp("clone"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    out = subprocess.run([str(src / "scripts" / "run"), "--help"], cwd=src, env=env, capture_output=True,
                         text=True, check=False, timeout=900)  # fmt: skip
    return src, out


def test_scripts_run_shows_one_line_per_install_step(
    run_help: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, out = run_help
    assert out.returncode == 0, out.stderr
    assert "usage: routerd" in out.stdout
    steps = out.stderr.splitlines()
    assert all(line.startswith("==> ") for line in steps), out.stderr  # no pip or setuptools chatter
    assert any("installing -e .[router]" in line for line in steps)


def test_its_clusterd_says_which_extra_is_missing(
    run_help: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    src, _ = run_help
    out = subprocess.run(
        [str(src / ".venv" / "bin" / "clusterd")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert "the Python module yaml is missing" in line and "pip install '.[cluster]'" in line
