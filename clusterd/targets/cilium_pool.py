"""CiliumLoadBalancerIPPool: its ``spec.blocks`` hold the DynamicPrefix's ranges (LB-IPAM allocates from them).

Served as ``cilium.io/v2`` since Cilium 1.18, ``v2alpha1`` before (deprecated in 1.19).
"""

from __future__ import annotations

from clusterd.core import pools
from clusterd.targets.base import Rule
from clusterd.targets.lists import ListTarget

TARGET = ListTarget(
    pools.LB_POOL,
    group="cilium.io",
    versions=("v2", "v2alpha1"),
    metric="pool",
    reserves=True,
    rules=(Rule("cilium.io", pools.LB_POOL.plural, ("list", "watch", "patch")),),
)
