"""Step 4, place the spec's address ranges and subnets in the current prefix.

The pool and Service planners place them the same way for every prefix in
the history, so these functions are theirs too.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from clusterd.crd import DynamicPrefixSpec, RangeStatus, SubnetStatus
from routerd.core import ranges


@dataclass(frozen=True)
class Placement:
    """What the current prefix yields, and what did not fit (for the Degraded condition)."""

    ranges: tuple[RangeStatus, ...] = ()
    subnets: tuple[SubnetStatus, ...] = ()
    problems: tuple[str, ...] = ()


def placed_ranges(
    spec: DynamicPrefixSpec, prefix: IPv6Network
) -> tuple[dict[str, ranges.PlacedRange], list[str]]:
    """Each address range placed in ``prefix``, and errors for those that do not fit."""
    out: dict[str, ranges.PlacedRange] = {}
    errors = []
    for r in spec.address_ranges:
        try:
            out[r.name] = ranges.place_range(prefix, IPv6Address(r.start), IPv6Address(r.end))
        except ranges.RangeError as e:
            errors.append(f"range {r.name}: {e}")
    return out, errors


def placed_subnets(spec: DynamicPrefixSpec, prefix: IPv6Network) -> tuple[dict[str, IPv6Network], list[str]]:
    """Each subnet placed in ``prefix``, and errors for those that do not fit."""
    out: dict[str, IPv6Network] = {}
    errors = []
    for s in spec.subnets:
        try:
            out[s.name] = ranges.place_subnet(prefix, s.offset, s.prefix_length)
        except ranges.RangeError as e:
            errors.append(f"subnet {s.name}: {e}")
    return out, errors


def place(spec: DynamicPrefixSpec, current: IPv6Network | None) -> Placement:
    """The ranges and subnets of ``current`` as the status lists them (none without a prefix)."""
    if current is None:
        return Placement()
    placed, range_errors = placed_ranges(spec, current)
    subnets, subnet_errors = placed_subnets(spec, current)
    return Placement(
        ranges=tuple(
            RangeStatus(name=n, start=str(r.start), end=str(r.end), cidrs=[str(c) for c in r.cidrs])
            for n, r in placed.items()
        ),
        subnets=tuple(SubnetStatus(name=n, cidr=str(c)) for n, c in subnets.items()),
        problems=(*range_errors, *subnet_errors),
    )
