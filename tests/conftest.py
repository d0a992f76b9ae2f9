"""Fixtures of the test ground: the real apiserver, broker and network labs.

Each fixture starts the real component once per session (or per test for the
labs), hands out a clean view per test, and cleans up even when a test fails.
A missing component skips with its name on a developer machine and fails
under ``CI=true``.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.ground import require, testbin
from tests.ground.require import missing

if TYPE_CHECKING:
    from tests.ground.apiserver import KubeAPI
    from tests.ground.lbipam import CiliumOperator, MetallbController
    from tests.ground.mosquitto import Mosquitto
    from tests.ground.netlab import Lab

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester", "tests.ground.ci_policy"]  # under CI=true: no skip, xfail or xpass
_topic_counter = itertools.count()


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the real components this run uses (CI logs show them)."""
    lines = []
    api = testbin.find("kube-apiserver")
    if api:
        import subprocess

        ver = subprocess.run([str(api), "--version"], capture_output=True, text=True, check=False)
        etcd = testbin.find("etcd")
        etcd_ver = (
            subprocess.run(
                [str(etcd), "--version"], capture_output=True, text=True, check=False
            ).stdout.splitlines()[0]
            if etcd
            else "etcd: not built"
        )
        lines.append(f"kube-apiserver: {ver.stdout.strip()} ({api}); {etcd_ver}")
    else:
        lines.append("kube-apiserver: not built (scripts/test builds it)")
    # testbin's helpers need only the standard library: the openwrt env has no kubernetes client.
    ipams = (
        ("cilium-operator-generic", testbin.cilium_operator_version),
        ("metallb-controller", testbin.metallb_version),
    )
    for name, version in ipams:
        binary = testbin.find(name)
        lines.append(
            f"{name}: {version(binary)} ({binary})"
            if binary
            else f"{name}: not built (scripts/test builds it)"
        )
    mosq = _which("mosquitto")
    if mosq:
        from tests.ground.mosquitto import mosquitto_version

        lines.append(f"mosquitto: {mosquitto_version(mosq)}")
    else:
        lines.append("mosquitto: not installed")
    radvd = _which("radvd")
    if radvd:
        from tests.ground.netlab import radvd_version

        lines.append(f"radvd: {radvd_version(radvd)}")
    else:
        lines.append("radvd: not installed")
    lines.append(f"CI={os.environ.get('CI', '')!r} (under CI=true a skip, xfail or xpass fails the run)")
    return lines


# -- Kubernetes API -------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube_api_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPI]:
    """One real etcd + kube-apiserver for the session, with the base CRDs applied."""
    built = testbin.find("kube-apiserver") and testbin.find("etcd")
    if not built and testbin.go_binary() is None:
        missing("kube-apiserver/etcd test binaries and Go >= 1.26 to build them (scripts/test)")
    from tests.ground import crds
    from tests.ground.apiserver import install_base_crds, start_session_apiserver

    try:
        docs = crds.base()
    except RuntimeError as e:  # the Cilium/MetalLB modules are not in the Go module cache
        missing(f"the upstream CRDs ({e}; scripts/test downloads them)")
    api = start_session_apiserver(tmp_path_factory.mktemp("kube"))
    install_base_crds(api, docs)
    yield api
    api.stop()


@pytest.fixture
def kube(kube_api_session: KubeAPI) -> Iterator[KubeAPI]:
    """The session's apiserver, returned to its starting state after the test."""
    from tests.ground.apiserver import clean_state

    api = kube_api_session
    if not api.running:  # a fault-injection test stopped it and failed
        api.start()
    yield api
    if not api.running:
        api.start()
    clean_state(api)


@pytest.fixture
def cluster(kube: KubeAPI) -> KubeAPI:
    """The apiserver with clusterd's namespace (for its Lease) in place."""
    from kubernetes import client as k8s

    k8s.CoreV1Api(kube.admin()).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="dynamic-prefix"))
    )
    return kube


# -- load-balancer IPAMs -------------------------------------------------------------------


def _ipam_binary(name: str) -> Path:
    found = testbin.find(name)
    if found is None:
        if testbin.go_binary() is None:
            missing(f"the {name} test binary and Go >= 1.26 to build it (scripts/test)")
        found = testbin.build(name)
    return found


@pytest.fixture
def cilium_operator(kube: KubeAPI, tmp_path: Path) -> Iterator[CiliumOperator]:
    """The real cilium-operator with LB-IPAM, started for this test and stopped after it."""
    require.require_root()  # its own mount namespace (unshare -m)
    require.require_program("unshare", "util-linux")
    from tests.ground.lbipam import CiliumOperator

    with CiliumOperator(
        kube, _ipam_binary("cilium-operator-generic"), tmp_path / "cilium-operator"
    ).started() as op:
        yield op


@pytest.fixture
def metallb_controller(kube: KubeAPI, tmp_path: Path) -> Iterator[MetallbController]:
    """The real MetalLB controller, started for this test and stopped after it."""
    from tests.ground.lbipam import MetallbController

    with MetallbController(
        kube, _ipam_binary("metallb-controller"), tmp_path / "metallb"
    ).started() as controller:
        yield controller


# -- MQTT ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One real Mosquitto for the session (plain, auth+ACL and TLS listeners)."""
    binary = require.require_program("mosquitto", "mosquitto")
    passwd = require.require_program("mosquitto_passwd", "mosquitto")
    from tests.ground.mosquitto import Mosquitto

    broker = Mosquitto(tmp_path_factory.mktemp("mqtt"), binary, passwd)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto(mosquitto_session: Mosquitto) -> Iterator[Mosquitto]:
    """The session broker, restarted if a test left it stopped."""
    if not mosquitto_session.running:
        mosquitto_session.start()
    yield mosquitto_session
    if not mosquitto_session.running:
        mosquitto_session.start()


@pytest.fixture
def mqtt_base() -> str:
    """A topic base unique to the test, inside what the broker's ACL allows."""
    return f"dynamic-prefix/t{os.getpid()}-{next(_topic_counter)}"


# -- network labs ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _labs_ready() -> None:
    require.require_root()
    require.require_program("ip", "iproute2")
    from tests.ground.netlab import sweep_stale

    sweep_stale()


@pytest.fixture
def lab(_labs_ready: None, tmp_path: Path) -> Iterator[Lab]:
    """A fresh router/host namespace pair; radvd ready to start; torn down after."""
    require.require_program("radvd", "radvd")
    from tests.ground.netlab import Lab

    with Lab(tmp_path / "lab") as the_lab:
        yield the_lab
