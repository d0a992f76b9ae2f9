"""Fixtures of the clusterd suites that run with a real load-balancer IPAM."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import Clusterd
from tests.ground.lbipam import CiliumOperator, IngressLog, MetallbController

NS = "apps"


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


@pytest.fixture
def ha(cluster: KubeAPI, tmp_path: Path) -> Iterator[Callable[..., Clusterd]]:
    """Start clusterd processes (webhook on); all are stopped after the test."""
    started: list[Clusterd] = []

    def start(name: str = "clusterd") -> Clusterd:
        cd = Clusterd(cluster, tmp_path / name)
        started.append(cd)
        cd.wait_ready()
        return cd

    yield start
    for cd in started:
        cd.stop()
