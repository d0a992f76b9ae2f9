"""The first run says up front that it builds the Go binaries and how long that takes, then shows progress.

A real build of helm, etcd or kube-apiserver takes minutes, so ``go`` here is
a stand-in script that answers the two calls testbin makes (``go env
GOVERSION`` and ``go build -o FILE``), taking a moment to "build".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ground import testbin

ROOT = Path(__file__).resolve().parents[2]
FAKE_GO = """#!/bin/sh
case "$1" in
  env) echo go1.26.0 ;;
  build) while [ "$1" != -o ]; do shift; done; sleep 0.5; printf '#!/bin/sh\\n' > "$2"; chmod +x "$2" ;;
esac
"""


def test_a_cold_cache_is_announced_and_each_build_reports_progress(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "go").write_text(FAKE_GO)
    (bindir / "go").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "KUBEBUILDER_ASSETS"}
    env.update(PATH=f"{bindir}:{env['PATH']}", DP_CACHE=str(tmp_path / "cache"))
    run = [sys.executable, "-m", "tests.ground.testbin", "build", "helm", "etcd"]
    first = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "first run: building helm, etcd" in first.stderr and "several minutes" in first.stderr, (
        first.stderr
    )
    for name in ("helm", "etcd"):
        assert f"==> building {name} v" in first.stderr and f"==> built {name} in 0m0" in first.stderr
    assert "[2/2] etcd:" in first.stderr
    again = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "first run" not in again.stderr and "building" not in again.stderr, again.stderr


def test_a_long_build_says_it_is_still_going(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    testbin._progress("thing", ["sleep", "0.35"], tmp_path, dict(os.environ), every=0.1)
    err = capsys.readouterr().err
    assert err.count("==> still building thing (0m00s)") >= 2 and "==> built thing in 0m00s" in err
