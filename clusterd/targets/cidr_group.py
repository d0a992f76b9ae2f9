"""CiliumCIDRGroup: its ``spec.externalCIDRs`` hold the DynamicPrefix's CIDRs (policies refer to the group).

Served as ``cilium.io/v2`` since Cilium 1.18, ``v2alpha1`` before.
"""

from __future__ import annotations

from clusterd.core import pools
from clusterd.targets.base import Rule
from clusterd.targets.lists import ListTarget

TARGET = ListTarget(
    pools.CIDR_GROUP,
    group="cilium.io",
    versions=("v2", "v2alpha1"),
    metric="pool",
    rules=(Rule("cilium.io", pools.CIDR_GROUP.plural, ("list", "watch", "patch")),),
)
