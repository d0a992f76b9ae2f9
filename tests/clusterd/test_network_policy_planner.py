"""The NetworkPolicy planner: which peers clusterd adds, keeps and takes back, in which rules. Pure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clusterd.core.placements import Placements
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from clusterd.targets.base import Context, Patch
from clusterd.targets.network_policy import MANAGED, PEERS, TARGET

A, B = "2001:db8:a::/64", "2001:db8:b::/64"
USER_V6 = {"ipBlock": {"cidr": "2001:db8:ffff::/48"}}
USER_V4 = {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.1/32"]}}
PODS = {"podSelector": {"matchLabels": {"app": "probe"}}}
PORTS = [{"protocol": "TCP", "port": 443}]

SPEC = DynamicPrefixSpec.model_validate(
    {
        "acquisition": {"routerd": {"router": "edge", "interface": "br-lan"}},
        "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
        "subnets": [],
    }
)


def status(*prefixes: tuple[str, str]) -> DynamicPrefixStatus:
    return DynamicPrefixStatus.model_validate(
        {
            "currentPrefix": prefixes[0][0],
            "history": [{"prefix": p, "state": s, "acquiredAt": "2026-11-26T12:00:00Z"} for p, s in prefixes],
        }
    )


ON_A = status((A, "active"))
A_AND_B = status((B, "active"), (A, "draining"))
ON_B = status((B, "active"), (A, "expired"))


def ip(cidr: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr}}


def policy(ingress: list[Any] | None = None, egress: list[Any] | None = None, **ann: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "1",
                     "annotations": {"dynamic-prefix.io/name": "home", **ann}},
        "spec": spec,
    }  # fmt: skip


def applied(obj: dict[str, Any], p: Patch | None) -> dict[str, Any]:
    """``obj`` after the merge patch ``p`` (what the API server would store)."""
    if p is None:
        return obj
    ann = {**obj["metadata"]["annotations"], **p.annotations}
    meta = {**obj["metadata"], "annotations": {k: v for k, v in ann.items() if v is not None}}
    return {**obj, "metadata": meta, "spec": {**obj["spec"], **(p.spec or {})}}


def plan(obj: dict[str, Any], st: DynamicPrefixStatus | None = ON_A) -> Any:
    spec = None if st is None else SPEC
    return TARGET.desired(spec, st, obj, Context(Placements(SPEC)))


def record(obj: dict[str, Any]) -> list[str]:
    return list(json.loads(obj["metadata"]["annotations"][MANAGED]))


def test_ingress_rules_with_peers_get_the_prefix_user_peers_and_ports_untouched() -> None:
    obj = policy([{"from": [USER_V6, PODS], "ports": PORTS}, {"ports": PORTS}])
    p = plan(obj)
    assert p.problem is None
    assert p.final == p.grow  # only adds: the same write in either step
    after = applied(obj, p.final)
    assert after["spec"]["ingress"] == [{"from": [USER_V6, PODS, ip(A)], "ports": PORTS}, {"ports": PORTS}]
    assert record(after) == [A]


def test_a_renumbering_adds_b_keeps_a_while_it_drains_then_drops_a() -> None:
    obj = applied(policy([{"from": [USER_V4, USER_V6]}]), plan(policy([{"from": [USER_V4, USER_V6]}])).final)
    p = plan(obj, A_AND_B)
    assert p.grow == p.final
    on_both = applied(obj, p.final)
    assert on_both["spec"]["ingress"] == [{"from": [USER_V4, USER_V6, ip(A), ip(B)]}]
    assert sorted(record(on_both)) == [A, B]
    p = plan(on_both, ON_B)
    assert p.grow is None  # nothing to add: the removal waits for the final step
    on_b = applied(on_both, p.final)
    assert on_b["spec"]["ingress"] == [{"from": [USER_V4, USER_V6, ip(B)]}]
    assert record(on_b) == [B]


def test_in_step_plans_no_write() -> None:
    obj = policy([{"from": [PODS]}])
    in_step = applied(obj, plan(obj).final)
    p = plan(in_step)
    assert (p.grow, p.final, p.problem) == (None, None, None)


@pytest.mark.parametrize(
    ("peers", "ingress", "egress"),
    [
        (None, [PODS, ip(A)], [USER_V6]),
        ("ingress", [PODS, ip(A)], [USER_V6]),
        ("egress", [PODS], [USER_V6, ip(A)]),
        ("both", [PODS, ip(A)], [USER_V6, ip(A)]),
    ],
)
def test_the_peers_annotation_says_which_direction(
    peers: str | None, ingress: list[Any], egress: list[Any]
) -> None:
    obj = policy([{"from": [PODS]}], [{"to": [USER_V6]}], **({PEERS: peers} if peers else {}))
    after = applied(obj, plan(obj).final)
    assert after["spec"]["ingress"] == [{"from": ingress}]
    assert after["spec"]["egress"] == [{"to": egress}]


def test_moving_from_ingress_to_egress_takes_the_ingress_peers_back() -> None:
    obj = policy([{"from": [PODS]}], [{"to": [USER_V6]}])
    on_ingress = applied(obj, plan(obj).final)
    moved = {**on_ingress, "metadata": {**on_ingress["metadata"],
             "annotations": {**on_ingress["metadata"]["annotations"], PEERS: "egress"}}}  # fmt: skip
    p = plan(moved)
    assert p.grow is not None and p.grow.spec == {"egress": [{"to": [USER_V6, ip(A)]}]}  # added first
    after = applied(moved, p.final)
    assert after["spec"] == {
        "podSelector": {},
        "ingress": [{"from": [PODS]}],
        "egress": [{"to": [USER_V6, ip(A)]}],
    }


def test_a_range_or_subnet_gives_its_cidrs() -> None:
    obj = policy([{"from": [PODS]}], **{"dynamic-prefix.io/address-range": "lb"})
    after = applied(obj, plan(obj).final)
    assert after["spec"]["ingress"] == [{"from": [PODS, ip("2001:db8:a:0:f000::/68")]}]


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        (policy([{"from": [PODS]}], **{"dynamic-prefix.io/address-range": "nope"}), "'nope' is not in"),
        (policy([{"from": [PODS]}], **{PEERS: "sideways"}), "dynamic-prefix.io/peers is 'sideways'"),
        (policy([{"ports": PORTS}]), "no ingress rule has a peer of its own"),
        (policy(), "no ingress rule has a peer of its own"),
        (policy([{"from": [PODS]}], **{PEERS: "egress"}), "no egress rule has a peer of its own"),
    ],
)
def test_an_invalid_policy_is_a_problem_and_nothing_is_written(obj: dict[str, Any], words: str) -> None:
    p = plan(obj)
    assert (p.grow, p.final) == (None, None)
    assert p.problem is not None and words in p.problem, p.problem


def test_a_rule_left_with_only_clusterds_peers_is_never_emptied_and_is_a_problem() -> None:
    obj = applied(policy([{"from": [PODS]}, {"from": [USER_V6]}]),
                  plan(policy([{"from": [PODS]}, {"from": [USER_V6]}])).final)  # fmt: skip
    obj["spec"]["ingress"][0]["from"] = [ip(A)]  # the user removed their own peer
    p = plan(obj, A_AND_B)
    assert p.problem is not None and "ingress rule 1 has no peer of its own" in p.problem
    after = applied(obj, p.final)
    # Removing A would leave the rule with no peer, which admits everyone: it is left as it is.
    assert after["spec"]["ingress"] == [{"from": [ip(A)]}, {"from": [USER_V6, ip(A), ip(B)]}]
    assert sorted(record(after)) == [A, B]


def test_release_takes_back_only_clusterds_peers_and_the_record() -> None:
    obj = policy([{"from": [USER_V6, PODS]}], [{"to": [USER_V4]}], **{PEERS: "both"})
    on_a = applied(obj, plan(obj).final)
    assert on_a["spec"]["egress"] == [{"to": [USER_V4, ip(A)]}]
    del on_a["metadata"]["annotations"]["dynamic-prefix.io/name"]
    assert TARGET.follows(on_a) is None and TARGET.has_record(on_a)
    p = plan(on_a, None)
    released = applied(on_a, p.final)
    assert released["spec"] == obj["spec"]
    assert MANAGED not in released["metadata"]["annotations"]
    assert plan(released, None).final is None


def test_a_users_peer_equal_to_a_prefix_is_not_added_twice() -> None:
    obj = policy([{"from": [ip(A)]}, {"from": [PODS]}])
    after = applied(obj, plan(obj).final)
    assert after["spec"]["ingress"] == [{"from": [ip(A)]}, {"from": [PODS, ip(A)]}]


def test_before_any_prefix_a_policy_without_a_record_gets_no_write() -> None:
    """No prefix yet and nothing owned: an empty record is no reason to write (it was, once)."""
    p = plan(policy([{"from": [USER_V6], "ports": PORTS}]), DynamicPrefixStatus())
    assert (p.grow, p.final, p.problem) == (None, None, None)
