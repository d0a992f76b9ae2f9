"""MetalLB's IPAddressPool: its ``spec.addresses`` hold the DynamicPrefix's ranges (MetalLB allocates from them).

Namespaced (MetalLB reads pools from its own namespace, ``metallb-system`` by
default); served as ``metallb.io/v1beta1``. A range is written as
``start-end``, a subnet or the whole prefix as a CIDR. MetalLB keeps no
addresses back in an IPv6 range, so nothing is reserved.
"""

from __future__ import annotations

from clusterd.core import pools
from clusterd.targets.base import Rule
from clusterd.targets.lists import ListTarget

TARGET = ListTarget(
    pools.METALLB_POOL,
    group="metallb.io",
    versions=("v1beta1",),
    metric="pool",
    rules=(Rule("metallb.io", pools.METALLB_POOL.plural, ("list", "watch", "patch")),),
)
