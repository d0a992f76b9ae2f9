"""Fixtures shared by the clusterd tests, and those of the suites that run with a real load-balancer IPAM."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import Clusterd
from tests.ground.lbipam import CiliumOperator, IngressLog, MetallbController

NS = "apps"


@pytest.fixture
def clusterd_factory(cluster: KubeAPI, tmp_path: Path) -> Iterator[Callable[..., Clusterd]]:
    """Start clusterd processes (``Clusterd`` keyword arguments); all are stopped after the test.

    Each one's log is kept in its directory under tmp_path, beside cilium-operator's, for a post-mortem.
    """
    started: list[Clusterd] = []

    def make(name: str | None = None, **kw: Any) -> Clusterd:
        cd = Clusterd(cluster, tmp_path / (name or f"clusterd-{len(started)}"), **kw)
        started.append(cd)
        return cd

    yield make
    for cd in started:
        cd.stop()
        (cd.workdir / "clusterd.log").write_text(cd.log())


@pytest.fixture
def ha(clusterd_factory: Callable[..., Clusterd]) -> Callable[..., Clusterd]:
    """Start a clusterd (webhook on) and wait until it is ready; all are stopped after the test."""

    def start(name: str = "clusterd") -> Clusterd:
        cd = clusterd_factory(name)
        cd.wait_ready()
        return cd

    return start


def _apps(kube: KubeAPI) -> IngressLog:
    k8s.CoreV1Api(kube.admin()).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
    return IngressLog(kube, NS)


@pytest.fixture
def ingress(cluster: KubeAPI, cilium_operator: CiliumOperator) -> Iterator[IngressLog]:
    """The ``apps`` namespace with Cilium LB-IPAM running, every address it gives recorded."""
    log = _apps(cluster)
    yield log
    log.stop()


@pytest.fixture
def metallb_ingress(cluster: KubeAPI, metallb_controller: MetallbController) -> Iterator[IngressLog]:
    """The ``apps`` namespace with MetalLB's controller running, every address it gives recorded."""
    log = _apps(cluster)
    yield log
    log.stop()
