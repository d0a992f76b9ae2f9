"""Skip-or-fail for tests whose real components are missing.

On a developer's machine a test that needs root, Go or a Debian package skips
and names what is missing. Under ``CI=true`` the same condition fails the test:
in CI nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(what: str) -> NoReturn:
    """Skip (or under CI fail) because ``what`` is missing; ``what`` says how to get it."""
    if in_ci():
        pytest.fail(f"CI=true and the test ground is incomplete: missing {what}", pytrace=False)
    pytest.skip(f"missing {what}")


def require_root() -> None:
    if os.geteuid() != 0:
        missing("root (network namespaces and raw sockets need it; run scripts/test as root)")


def require_program(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        missing(f"program {name!r} (Debian package {package}; scripts/test installs it as root)")
    return path
