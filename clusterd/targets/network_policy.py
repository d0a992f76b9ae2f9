"""Kubernetes NetworkPolicies: ``ipBlock`` peers for the prefixes in use, in the rules that have peers. Pure.

A NetworkPolicy opts in with the pools' annotations (``dynamic-prefix.io/name``,
optionally ``dynamic-prefix.io/address-range`` or ``dynamic-prefix.io/subnet``)
and says where the peers go with ``dynamic-prefix.io/peers``: ``ingress`` (the
default: each ingress rule's ``from``), ``egress`` (each egress rule's ``to``)
or ``both``. clusterd adds one ``ipBlock`` peer per CIDR (the same CIDRs a
CiliumCIDRGroup with these annotations holds: the current prefix and each
draining one) to every such rule that has a peer of the user's, and records
the CIDRs it owns in ``dynamic-prefix.io/managed``. A rule with no peer admits
everyone: adding one would narrow it, and taking clusterd's last one back would
open it to everyone, so such a rule is never touched. NetworkPolicies add up,
so rules that should admit the prefix go in a policy of their own.

A holder: new peers are added (``grow``) before the Services move, old ones
removed (``final``) after, in one write per step for both directions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from clusterd.core import pools
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from clusterd.targets.base import NAME, Context, Edited, Patch, Plan, Rule, annotations_of

PEERS = "dynamic-prefix.io/peers"
MANAGED = pools.MANAGED
WHERE = {"ingress": ("ingress",), "egress": ("egress",), "both": ("ingress", "egress")}
PEER_LIST = {"ingress": "from", "egress": "to"}
"""Each direction's list of rules, and the rule's list of peers."""


def _peer(cidr: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr}}


def _owned(annotations: Mapping[str, str]) -> list[str]:
    return [c for c in pools.owned(annotations) if isinstance(c, str)]


@dataclass(frozen=True)
class _Rules:
    """One direction's rules after a step, and which rules hold only clusterd's peers."""

    rules: list[Any]
    stuck: list[int]
    left: list[str]
    """clusterd's CIDRs still in those rules (they stay recorded)."""


def _step(rules: list[Any], key: str, mine: list[str], want: list[str]) -> _Rules:
    """Each rule with a peer of the user's gets exactly ``want`` of clusterd's peers; the others stay."""
    ours = [_peer(c) for c in mine]
    out: list[Any] = []
    stuck: list[int] = []
    left: list[str] = []
    for i, rule in enumerate(rules):
        peers = list((rule or {}).get(key) or [])
        if not any(p not in ours for p in peers):  # admits everyone, or only clusterd's peers are left
            if peers:
                stuck.append(i)
                left += [p["ipBlock"]["cidr"] for p in peers if p["ipBlock"]["cidr"] not in left]
            out.append(rule)
            continue
        kept = [p for p in peers if p not in ours or p in [_peer(c) for c in want]]
        new = kept + [_peer(c) for c in want if _peer(c) not in kept]
        out.append({**rule, key: new} if new != peers else rule)
    return _Rules(out, stuck, left)


def _write(
    spec: Mapping[str, Any], steps: dict[str, _Rules], record: list[str] | None, before: Mapping[str, str]
) -> Patch | None:
    """The patch that sets the changed directions and the record; None when nothing changes."""
    changed = {d: s.rules for d, s in steps.items() if s.rules != list(spec.get(d) or [])}
    if not changed and pools.record_unchanged(before, record):
        return None
    return Patch({MANAGED: pools.managed_annotation(record)}, spec=changed)


def _unique(cidrs: list[str]) -> list[str]:
    return list(dict.fromkeys(cidrs))


@dataclass(frozen=True)
class NetworkPolicyTarget(Edited):
    kind: str = "NetworkPolicy"
    group: str = "networking.k8s.io"
    plural: str = "networkpolicies"
    versions: tuple[str, ...] = ("v1",)
    crd: bool = False
    consumer: bool = False
    metric: str = "networkpolicy"
    rules: tuple[Rule, ...] = (Rule("networking.k8s.io", "networkpolicies", ("list", "watch", "patch")),)

    def follows(self, obj: Mapping[str, Any]) -> str | None:
        return annotations_of(obj).get(NAME)

    def has_record(self, obj: Mapping[str, Any]) -> bool:
        return MANAGED in annotations_of(obj)

    def taken(self, obj: Mapping[str, Any]) -> set[IPv6Address]:
        return set()  # a policy admits addresses; it holds none

    def reads(self, obj: Mapping[str, Any]) -> object:
        return annotations_of(obj), obj.get("spec")

    def desired(
        self,
        spec: DynamicPrefixSpec | None,
        status: DynamicPrefixStatus | None,
        obj: Mapping[str, Any],
        ctx: Context,
    ) -> Plan:
        ann, rules = annotations_of(obj), obj.get("spec") or {}
        mine = _owned(ann)
        if spec is None or status is None:  # released: take back only clusterd's peers
            steps = {d: _step(list(rules.get(d) or []), k, mine, []) for d, k in PEER_LIST.items()}
            left = _unique([c for s in steps.values() for c in s.left])
            return Plan(final=_write(rules, steps, left or None, ann))
        where = ann.get(PEERS, "ingress")
        if where not in WHERE:
            return Plan(problem=f"{PEERS} is {where!r}: use ingress, egress or both")
        # The CIDRs a CiliumCIDRGroup with the same annotations holds.
        want, problem = pools.desired(pools.CIDR_GROUP, ann, spec, status, ctx.placements)
        if problem is not None:
            return Plan(problem=problem)
        ours = [_peer(c) for c in mine]
        lacking = [d for d in WHERE[where] if not any(
            p not in ours for r in rules.get(d) or [] for p in (r or {}).get(PEER_LIST[d]) or [])]  # fmt: skip
        if lacking:
            return Plan(problem="; ".join(
                f"no {d} rule has a peer of its own to add the prefix to (a rule with no `{PEER_LIST[d]}` "
                f"admits everyone): give one a peer, e.g. `ipBlock: {{cidr: 100::/64}}` (RFC 6666's "
                f"discard prefix, which matches nothing)" for d in lacking))  # fmt: skip
        wanted = {d: want if d in WHERE[where] else [] for d in PEER_LIST}
        current = {d: list(rules.get(d) or []) for d in PEER_LIST}
        grown = {d: _step(current[d], k, mine, _unique(mine + wanted[d])) for d, k in PEER_LIST.items()}
        final = {d: _step(current[d], k, mine, wanted[d]) for d, k in PEER_LIST.items()}
        stuck = [
            f"{d} rule {i + 1} has no peer of its own, only clusterd's: left as it is (without them "
            f"it would admit everyone); add a peer of yours"
            for d in WHERE[where]
            for i in final[d].stuck
        ]
        left = [c for s in final.values() for c in s.left]
        kept = [c for c in mine if c in want or c in left]  # the record keeps its order: no write for order
        added = any(s.rules != current[d] for d, s in grown.items())
        return Plan(
            grow=_write(rules, grown, _unique(mine + want + left), ann) if added else None,
            final=_write(rules, final, _unique(kept + want + left), ann),
            problem="; ".join(stuck) or None,
        )


TARGET = NetworkPolicyTarget()
