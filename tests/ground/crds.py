"""The CRDs the test ground installs, and where each comes from.

Cilium's and MetalLB's are the upstream manifests of the very module versions
the IPAM controllers are built from (``tests/testbin/versions.env``), read from
the Go module cache at test time — never copied into this repository.
``DynamicPrefix`` is ours (``manifests/crds/``). Calico's ``IPPool`` is the one
hand-written CRD left (``tests/crds/calico.yaml``; its header says why).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from tests.ground import testbin
from tests.ground.apiserver import load_yaml_docs

ROOT = Path(__file__).resolve().parent.parent.parent
CILIUM_CRD_DIR = "pkg/k8s/apis/cilium.io/client/crds"
METALLB_CRD_DIR = "config/crd/bases"
#: The kinds clusterd writes; Cilium <= 1.17 served them as cilium.io/v2alpha1 only.
CILIUM_CLUSTERD_KINDS = ("ciliumloadbalancerippools.cilium.io", "ciliumcidrgroups.cilium.io")
METALLB_POOLS = "ipaddresspools.metallb.io"
CALICO_POOLS = "ippools.crd.projectcalico.org"


@functools.cache
def _upstream(tool: str, subdir: str) -> tuple[dict[str, Any], ...]:
    files = sorted((testbin.module_source(tool) / subdir).glob("**/*.yaml"))
    if not files:
        raise RuntimeError(f"no CRD manifests under {testbin.module_source(tool) / subdir}")
    return tuple(load_yaml_docs(files))


def cilium() -> list[dict[str, Any]]:
    """Every CRD of the pinned Cilium release (cilium-operator expects them all)."""
    return copy.deepcopy(list(_upstream("cilium-operator-generic", CILIUM_CRD_DIR)))


def cilium_clusterd_kinds() -> list[dict[str, Any]]:
    """The pool and CIDR-group CRDs of the pinned Cilium release."""
    return [c for c in cilium() if c["metadata"]["name"] in CILIUM_CLUSTERD_KINDS]


def cilium_v2alpha1_only() -> list[dict[str, Any]]:
    """The pool and CIDR-group CRDs as Cilium 1.13-1.17 served them: ``v2alpha1`` only.

    Derived from the pinned release's CRD by dropping ``v2`` and making
    ``v2alpha1`` the storage version; its ``v2alpha1`` schema is the older
    releases' schema, carried forward unchanged.
    """
    out = []
    for crd in cilium_clusterd_kinds():
        versions = [v for v in crd["spec"]["versions"] if v["name"] == "v2alpha1"]
        for v in versions:
            v["storage"] = True
            v.pop("deprecated", None)
            v.pop("deprecationWarning", None)
        crd["spec"]["versions"] = versions
        out.append(crd)
    return out


def metallb() -> list[dict[str, Any]]:
    """Every CRD of the pinned MetalLB release (its controller watches them all)."""
    return copy.deepcopy(list(_upstream("metallb-controller", METALLB_CRD_DIR)))


def calico_v3() -> dict[str, Any]:
    """A STAND-IN for Calico's API server: ``projectcalico.org/v3`` IPPools served by a CRD.

    Calico's API server (an aggregated API) cannot run here (its module is not served by the Go
    module proxy). kube-apiserver registers an APIService ``v3.projectcalico.org`` for a CRD's
    group, Available, as the aggregator does for Calico's: clusterd discovers v3 the same way.
    Its schema and validation rules are ``tests/crds/calico.yaml``'s (the v3 fields are the v1
    ones); unlike Calico's, its objects are stored apart from the v1 ones.
    """
    (crd,) = load_yaml_docs([ROOT / "tests" / "crds" / "calico.yaml"])
    crd["metadata"]["name"] = "ippools.projectcalico.org"
    crd["spec"]["group"] = "projectcalico.org"
    for v in crd["spec"]["versions"]:
        v["name"] = "v3"
    return crd


def base() -> list[dict[str, Any]]:
    """The CRDs every test session starts with."""
    ours = sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
    return [*load_yaml_docs([*ours, ROOT / "tests" / "crds" / "calico.yaml"]), *cilium(), *metallb()]
