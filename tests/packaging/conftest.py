"""Fixtures for the packaging tests: helm (built from its Go module) and the rendered chart."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ground import testbin
from tests.ground.require import missing

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "manifests" / "charts" / "dynamic-prefix"
KUBE_VERSION = testbin.versions()["KUBERNETES_VERSION"]


@pytest.fixture(scope="session")
def helm() -> Path:
    found = testbin.find("helm")
    if found is None:
        if testbin.go_binary() is None:
            missing("helm and Go >= 1.26 to build it (scripts/test builds it)")
        found = testbin.build("helm")
    return found


def render(
    helm: Path, *sets: str, namespace: str = "dynamic-prefix", release: str = "dp"
) -> list[dict[str, Any]]:
    argv = [
        str(helm),
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]
    for s in sets:
        argv += ["--set", s]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix))


def clone(dst: Path) -> Path:
    """A copy of this checkout's files (tracked and new, as they are now), as a user's clone would have
    them; tests that install from it leave no build output in the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True, cwd=ROOT).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dst / name)
    return dst
