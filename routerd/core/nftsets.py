"""What routerd's nftables sets hold, and the text that puts it there.

Pure: the adapter (routerd/adapters/nft.py) hands in the newest state of each
interface with the moment it arrived and ``now``; this module returns the
contents of every set and renders them as one ``nft -f`` transaction (own
table) or as fw4 loadfiles (OpenWrt).

- The prefix set holds every prefix that is still valid: the current one and
  those draining (RFC 4862 §5.5.4: a deprecated address keeps working until
  its valid lifetime ends). Withdrawn prefixes (valid lifetime 0, RFC 9096)
  are left out.
- A range set holds, in each of those prefixes, the addresses between two host
  suffixes, as the exact CIDRs of :func:`routerd.core.ranges.place_range`.
- Each element carries a timeout of the prefix's remaining valid lifetime, so
  a routerd that died never leaves an opening behind for longer than the
  router said the prefix would live. An interval set refuses overlapping
  elements, so a prefix inside another (a delegated /56 and its /64) is
  folded into the outer one, which keeps the longer timeout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from routerd.core.ranges import place_range
from routerd.core.wire import PrefixState, PrefixStatus

MAX_TIMEOUT = 4_294_967
"""Seconds: 2**32 - 1 ms. Kernels before 4.20 kept an element's timeout in 32 bits
of milliseconds (a longer one wraps); an infinite lifetime gets this too, so
even then an opening ends by itself about 49 days after routerd last wrote it."""

Element = tuple[IPv6Network, int]
"""A set element: the network and its timeout in seconds (1..MAX_TIMEOUT)."""


@dataclass(frozen=True)
class RangeSet:
    """One range placed in every valid prefix: host suffixes ``start``..``end``."""

    set: str
    start: IPv6Address
    end: IPv6Address


@dataclass(frozen=True)
class Received:
    """An interface's newest state and when it arrived (the caller's monotonic clock)."""

    state: PrefixState
    at: float


def valid_prefixes(states: Iterable[Received], now: float) -> dict[IPv6Network, int]:
    """Every still-valid prefix with its remaining valid lifetime at ``now``, in whole seconds.

    Lifetimes on the wire are remaining seconds at publication, so the time
    since a state arrived is taken off. A remainder is rounded up: a prefix
    with half a second to live is still valid, and a timeout of 0 would make
    nftables keep the element for ever.
    """
    out: dict[IPv6Network, int] = {}
    for r in states:
        elapsed = max(0.0, now - r.at)
        for p in r.state.prefixes:
            if p.state is PrefixStatus.WITHDRAWN:
                continue
            valid = MAX_TIMEOUT if p.valid_lifetime is None else math.ceil(p.valid_lifetime - elapsed)
            left = min(MAX_TIMEOUT, valid)
            if left > 0:
                out[p.prefix] = max(left, out.get(p.prefix, 0))
    return out


def folded(elements: Iterable[Element]) -> tuple[Element, ...]:
    """Elements without overlaps: one inside another joins it, with the longer timeout."""
    kept: list[Element] = []
    for net, timeout in sorted(elements, key=lambda e: (e[0].network_address, e[0].prefixlen)):
        # Sorted by start, widest first: CIDRs either nest or are disjoint, so an
        # element can only lie inside the last one kept.
        if kept and net.subnet_of(kept[-1][0]):
            kept[-1] = (kept[-1][0], max(timeout, kept[-1][1]))
            continue
        kept.append((net, timeout))
    return tuple(kept)


def contents(
    prefix_set: str, ranges: Sequence[RangeSet], prefixes: Mapping[IPv6Network, int]
) -> dict[str, tuple[Element, ...]]:
    """Each set's elements: the prefix set first, then the range sets in the order they are named."""
    out: dict[str, list[Element]] = {prefix_set: list(prefixes.items())}
    for r in ranges:
        placed = out.setdefault(r.set, [])
        for prefix, timeout in prefixes.items():
            placed += [(cidr, timeout) for cidr in place_range(prefix, r.start, r.end).cidrs]
    return {name: folded(elements) for name, elements in out.items()}


def script(table: str, sets: Mapping[str, Sequence[Element]], *, fill: bool = True) -> str:
    """One ``nft -f`` transaction: declare the table and sets, then replace every set's elements.

    nft applies the whole file or nothing, so a refused transaction leaves
    every set as it was. Declaring what exists already (with the same type and
    flags) changes nothing, so a table the user wrote with its own chains and
    the same set declarations is kept. With ``fill`` false only the
    declarations are made and the elements stay as they are.
    """
    lines = [f"table inet {table} {{"]
    for name in sets:
        lines += [f"\tset {name} {{", "\t\ttype ipv6_addr", "\t\tflags interval, timeout", "\t}"]
    lines.append("}")
    if fill:
        for name, elements in sets.items():
            lines.append(f"flush set inet {table} {name}")
            if elements:
                listed = ", ".join(f"{net} timeout {timeout}s" for net, timeout in elements)
                lines.append(f"add element inet {table} {name} {{ {listed} }}")
    return "\n".join(lines) + "\n"


def loadfile(name: str, elements: Sequence[Element]) -> str:
    """The contents of an fw4 ``loadfile`` for the set ``name``: one network per line.

    fw4 reads one entry per line and skips lines starting with ``#``; its
    entries carry no timeout (fw4 re-reads the file on every reload).
    """
    header = f"# routerd: the elements of the fw4 set {name}; rewritten on every change, do not edit\n"
    return header + "".join(f"{net}\n" for net, _ in elements)
