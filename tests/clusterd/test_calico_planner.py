"""The Calico IPPool planner (clusterd/targets/calico_pool.py): parents make pools, derived pools follow their prefix.

Tables of (status, pools) -> what is created, enabled, disabled or deleted;
never a ``cidr`` written to an existing pool.
"""

from __future__ import annotations

from typing import Any

import pytest

from clusterd.core.placements import Placements
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from clusterd.targets import calico_pool
from clusterd.targets.base import Context, Create, Delete, Patch, Plan
from clusterd.targets.calico_pool import PARENT, PREFIX, TARGET, derived_name

SPEC = DynamicPrefixSpec.model_validate({
    "acquisition": {"routerd": {"router": "edge", "interface": "br-lan"}},
    "addressRanges": [{"name": "lb", "start": "::ffff:0:0:0", "end": "::ffff:0:0:ffff"},
                      {"name": "odd", "start": "::3", "end": "::10"}],
    "subnets": [{"name": "lan2", "offset": 2, "prefixLength": 64}],
})  # fmt: skip
A, B = "2001:db8:a::/56", "2001:db8:b::/56"
A_LB, B_LB = "2001:db8:a:0:ffff::/112", "2001:db8:b:0:ffff::/112"
PARENT_SPEC = {"cidr": "fd00:0:0:ffff::/120", "disabled": True, "allowedUses": ["LoadBalancer"],
               "blockSize": 122, "natOutgoing": False, "nodeSelector": "all()", "vxlanMode": "Never",
               "disableBGPExport": True}  # fmt: skip


def status(*history: tuple[str, str]) -> DynamicPrefixStatus:
    return DynamicPrefixStatus.model_validate({
        "currentPrefix": next((p for p, s in history if s == "active"), None),
        "history": [{"prefix": p, "state": s, "acquiredAt": "2026-11-26T12:00:00Z"} for p, s in history],
    })  # fmt: skip


def parent(ann: dict[str, str] | None = None, name: str = "lb") -> dict[str, Any]:
    ann = {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/address-range": "lb"} if ann is None else ann
    return {"metadata": {"name": name, "annotations": ann, "resourceVersion": "1"}, "spec": dict(PARENT_SPEC)}


def derived(
    cidr: str, prefix: str, disabled: bool = False, of: str = "lb", dp: str = "home"
) -> dict[str, Any]:
    return {
        "metadata": {"name": derived_name(of, cidr), "labels": {"dynamic-prefix.io/name": dp, PARENT: of},
                     "annotations": {PREFIX: prefix}, "resourceVersion": "2"},
        "spec": {**{k: v for k, v in PARENT_SPEC.items() if k != "disabled"}, "cidr": cidr, "disabled": disabled},
    }  # fmt: skip


def context(*cached: dict[str, Any]) -> Context:
    """The pools that follow "home", as the cache gives them."""
    return Context(
        Placements(SPEC), following=lambda kind: [o for o in cached if TARGET.follows(o) == "home"]
    )


def plan(obj: dict[str, Any], st: DynamicPrefixStatus, *cached: dict[str, Any]) -> Plan:
    return TARGET.desired(SPEC, st, obj, context(*cached))


def creates(st: DynamicPrefixStatus, *cached: dict[str, Any]) -> list[Create]:
    return TARGET.creates(SPEC, st, context(*cached))


def test_a_parent_makes_one_pool_for_the_current_prefix_copying_its_spec() -> None:
    st = status((B, "active"), (A, "draining"))
    assert plan(parent(), st, parent()) == Plan()  # the parent itself is never written
    assert creates(st, parent()) == [Create({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": derived_name("lb", B_LB), "labels": {"dynamic-prefix.io/name": "home", PARENT: "lb"},
                     "annotations": {PREFIX: B}},
        "spec": {"allowedUses": ["LoadBalancer"], "blockSize": 122, "natOutgoing": False, "nodeSelector": "all()",
                 "vxlanMode": "Never", "disableBGPExport": True, "cidr": B_LB, "disabled": False},
    }, source=parent())]  # fmt: skip


@pytest.mark.parametrize(("ann", "cidrs"), [
    ({"dynamic-prefix.io/name": "home", "dynamic-prefix.io/subnet": "lan2"}, ["2001:db8:b:2::/64"]),
    ({"dynamic-prefix.io/name": "home"}, [B]),
    ({"dynamic-prefix.io/name": "home", "dynamic-prefix.io/address-range": "odd"},
     ["2001:db8:b::3/128", "2001:db8:b::4/126", "2001:db8:b::8/125", "2001:db8:b::10/128"]),
])  # fmt: skip
def test_subnet_whole_prefix_and_a_range_of_several_cidrs(ann: dict[str, str], cidrs: list[str]) -> None:
    made = creates(status((B, "active")), parent(ann))
    assert [c.body["spec"]["cidr"] for c in made] == cidrs
    assert len({c.body["metadata"]["name"] for c in made}) == len(cidrs)


def test_the_same_pool_while_it_exists_and_no_pool_without_a_current_prefix() -> None:
    st = status((B, "active"))
    made = creates(st, parent())
    assert creates(st, parent(), derived(B_LB, B)) == made  # made once: the controller skips the existing one
    assert creates(status((A, "draining")), parent()) == []
    assert creates(st, parent({})) == creates(st, parent({"dynamic-prefix.io/name": "other"})) == []


def test_a_derived_pool_is_no_parent() -> None:
    assert creates(status((B, "active")), derived(B_LB, B)) == []


def test_a_parent_naming_a_missing_range_is_a_problem() -> None:
    bad = parent({"dynamic-prefix.io/name": "home", "dynamic-prefix.io/address-range": "nope"})
    p = plan(bad, status((B, "active")), bad)
    assert creates(status((B, "active")), bad) == [] and p.problem is not None and "nope" in p.problem


ENABLE, DISABLE = Patch({}, spec={"disabled": False}), Patch({}, spec={"disabled": True})


@pytest.mark.parametrize(("pool", "history", "grow", "final"), [
    # current and wanted: in step
    (derived(A_LB, A), ((A, "active"),), None, None),
    # A -> B: A's pool disabled after the consumers moved (the final step), never its cidr edited
    (derived(A_LB, A), ((B, "active"), (A, "draining")), None, DISABLE),
    (derived(A_LB, A, disabled=True), ((B, "active"), (A, "draining")), None, None),
    # B -> A: A's pool enabled again before the consumers move (first step, and final in simple mode)
    (derived(A_LB, A, disabled=True), ((A, "active"), (B, "draining")), ENABLE, ENABLE),
    # A expired, withdrawn or gone from the history: deleted
    (derived(A_LB, A, disabled=True), ((B, "active"), (A, "expired")), None, Delete()),
    (derived(A_LB, A, disabled=True), ((B, "active"),), None, Delete()),
    (derived(A_LB, A), (), None, Delete()),
    # current, but the parent selects another CIDR now (a pool whose range changed): disabled
    (derived("2001:db8:a:0:eeee::/112", A), ((A, "active"),), None, DISABLE),
])  # fmt: skip
def test_a_derived_pool_follows_its_prefix(
    pool: dict[str, Any],
    history: tuple[tuple[str, str], ...],
    grow: Patch | None,
    final: Patch | Delete | None,
) -> None:
    p = plan(pool, status(*history), parent())
    assert (p.grow, p.final) == (grow, final)
    for w in (p.grow, p.final):
        assert not isinstance(w, Patch) or "cidr" not in (w.spec or {})


def test_a_derived_pool_whose_parent_is_gone_or_left_is_disabled_then_deleted() -> None:
    st = status((A, "active"))
    assert plan(derived(A_LB, A), st).final == DISABLE  # parent deleted
    assert plan(derived(A_LB, A), st, parent({})).final == DISABLE  # parent no longer annotated
    assert plan(derived(A_LB, A), st, parent({"dynamic-prefix.io/name": "other"})).final == DISABLE
    assert plan(derived(A_LB, A, disabled=True), status((B, "active"))).final == Delete()


def test_without_its_dynamic_prefix_nothing_is_written() -> None:
    ctx = Context(None)
    assert TARGET.desired(None, None, parent(), ctx) == Plan()
    assert TARGET.desired(None, None, derived(A_LB, A), ctx) == Plan()


def test_follows_parents_by_annotation_and_derived_pools_by_label() -> None:
    assert TARGET.follows(parent()) == "home"
    assert TARGET.follows(derived(A_LB, A)) == "home"
    assert not TARGET.has_record(parent()) and TARGET.has_record(derived(A_LB, A))
    unrelated = {"metadata": {"name": "x", "labels": {"dynamic-prefix.io/name": "home"}}}
    assert TARGET.follows(unrelated) is None  # a label alone (no parent) is not ours
    assert calico_pool.derived_name("lb", A_LB) != calico_pool.derived_name("lb", B_LB)
