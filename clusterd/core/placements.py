"""A DynamicPrefix's ranges and subnets placed in each prefix it uses, each computed once. Pure.

Placing a range decomposes it into CIDRs; a renumbering plans every pool and
every Service of the DynamicPrefix against the same few prefixes, so without
this a pass placed every range once per object (docs/performance.md, "HA
Services"). One instance belongs to one version of the spec.
"""

from __future__ import annotations

from ipaddress import IPv6Network

from clusterd.core.status import placed_ranges, placed_subnets
from clusterd.crd import DynamicPrefixSpec
from routerd.core.ranges import PlacedRange


class Placements:
    """``placed_ranges``/``placed_subnets`` of one spec, memoized by prefix (errors are the status's job)."""

    def __init__(self, spec: DynamicPrefixSpec) -> None:
        self.spec = spec
        self._ranges: dict[IPv6Network, dict[str, PlacedRange]] = {}
        self._subnets: dict[IPv6Network, dict[str, IPv6Network]] = {}

    def ranges(self, prefix: IPv6Network) -> dict[str, PlacedRange]:
        got = self._ranges.get(prefix)
        if got is None:
            got = self._ranges[prefix] = placed_ranges(self.spec, prefix)[0]
        return got

    def subnets(self, prefix: IPv6Network) -> dict[str, IPv6Network]:
        got = self._subnets.get(prefix)
        if got is None:
            got = self._subnets[prefix] = placed_subnets(self.spec, prefix)[0]
        return got
