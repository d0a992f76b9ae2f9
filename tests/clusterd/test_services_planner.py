"""The HA Service planner (clusterd/core/services.py): offsets from whichever prefix holds the address,
DNS on the current address only, users' values kept, pinned suffixes, release, simple mode; what the real
LB-IPAM needs: a chosen offset when it will give none, IPv4 kept, MetalLB's one address per family."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from hypothesis import given, strategies

from clusterd.core import services as sv
from clusterd.core.companions import HA_MODE
from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus

SPEC = DynamicPrefixSpec.model_validate({
    "acquisition": {"routerd": {"router": "edge", "interface": "br-lan"}},
    "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
    "transition": {"mode": "ha", "maxPrefixHistory": 2},
})  # fmt: skip
SIMPLE = SPEC.model_copy(update={"transition": SPEC.transition.model_copy(update={"mode": "simple"})})
A, B, C = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64"


def status(*history: tuple[str, str]) -> DynamicPrefixStatus:
    return DynamicPrefixStatus.model_validate({
        "currentPrefix": next((p for p, s in history if s == "active"), None),
        "history": [{"prefix": p, "state": s, "acquiredAt": "2026-11-26T12:00:00Z"} for p, s in history],
    })  # fmt: skip


def svc(
    ann: dict[str, str] | None = None, ips: tuple[str, ...] = (), type_: str = "LoadBalancer"
) -> sv.ServiceView:
    base = {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/service-address-range": "lb"}
    return sv.ServiceView("apps", "web", type_, {**base, **(ann or {})}, ips)


def apply(s: sv.ServiceView, p: sv.ServicePlan) -> sv.ServiceView:
    ann = dict(s.annotations)
    for k, v in p.annotations.items():
        if v is None:
            ann.pop(k, None)
        else:
            ann[k] = v
    return replace(s, annotations=ann)


def test_the_original_operators_bug_case_old_address_when_the_change_lands() -> None:
    # The Service still holds its prefix-A address; the current prefix is already B.
    s = svc(ips=("2001:db8:a:0:f000::2a",))
    p = sv.plan(s, SPEC, status((B, "active"), (A, "draining")))
    assert p.annotations[sv.CILIUM_IPS] == "2001:db8:b:0:f000::2a,2001:db8:a:0:f000::2a"
    assert p.annotations[sv.DNS_TARGET] == "2001:db8:b:0:f000::2a"


def test_a_to_b_to_c_with_two_previous_prefixes() -> None:
    s = svc(ips=("2001:db8:a:0:f000::7",))
    steps = [
        (status((A, "active")), "2001:db8:a:0:f000::7"),
        (status((B, "active"), (A, "draining")), "2001:db8:b:0:f000::7,2001:db8:a:0:f000::7"),
        (status((C, "active"), (B, "draining"), (A, "draining")),
         "2001:db8:c:0:f000::7,2001:db8:b:0:f000::7,2001:db8:a:0:f000::7"),
        (status((C, "active"), (B, "draining"), (A, "expired")), "2001:db8:c:0:f000::7,2001:db8:b:0:f000::7"),
    ]  # fmt: skip
    for st, want in steps:
        s = apply(s, sv.plan(s, SPEC, st))
        assert s.annotations[sv.CILIUM_IPS] == want
        assert s.annotations[sv.DNS_TARGET] == want.split(",")[0]
        assert sv.plan(s, SPEC, st).annotations == {}, "planning again changes nothing"


def test_dual_stack_keeps_the_users_ipv4_and_its_own_dns_entries() -> None:
    s = svc(
        {sv.CILIUM_IPS: "192.0.2.10", sv.DNS_TARGET: "203.0.113.7"},
        ips=("192.0.2.10", "2001:db8:a:0:f000::5"),
    )
    s = apply(s, sv.plan(s, SPEC, status((B, "active"), (A, "draining"))))
    assert s.annotations[sv.CILIUM_IPS] == "2001:db8:b:0:f000::5,2001:db8:a:0:f000::5,192.0.2.10"
    assert s.annotations[sv.DNS_TARGET] == "2001:db8:b:0:f000::5,203.0.113.7"
    unannotated = sv.ServiceView(
        s.namespace,
        s.name,
        s.type,
        {k: v for k, v in s.annotations.items() if k != "dynamic-prefix.io/name"},
        s.ingress_ips,
    )
    released = apply(unannotated, sv.plan(unannotated, SPEC, None))  # fmt: skip
    assert released.annotations.get(sv.CILIUM_IPS) == "192.0.2.10"
    assert released.annotations.get(sv.DNS_TARGET) == "203.0.113.7"
    assert sv.OWNED not in released.annotations


def test_pinned_suffix_follows_the_prefix() -> None:
    s = svc({sv.HOST_SUFFIX: "::f000:0:0:10"})
    p = sv.plan(s, SPEC, status((B, "active"), (A, "draining")))
    assert p.annotations[sv.CILIUM_IPS] == "2001:db8:b:0:f000::10,2001:db8:a:0:f000::10"
    bad = sv.plan(svc({sv.HOST_SUFFIX: "::10"}), SPEC, status((B, "active")))
    assert bad.annotations == {} and bad.problem is not None and "outside range lb" in bad.problem
    garbage = sv.plan(svc({sv.HOST_SUFFIX: "ten"}), SPEC, status((B, "active")))
    assert garbage.problem is not None and "not an IPv6 suffix" in garbage.problem


def test_no_address_yet_waits_and_an_address_outside_every_range_is_a_problem() -> None:
    assert sv.plan(svc(), SPEC, status((A, "active"))).waiting
    assert sv.plan(svc(ips=("192.0.2.1",)), SPEC, status((A, "active"))).waiting
    p = sv.plan(svc(ips=("2001:db8:a::1",)), SPEC, status((A, "active")))
    assert p.problem is not None and "outside range lb" in p.problem and p.annotations == {}


def test_dns_opt_out_and_metallb() -> None:
    p = sv.plan(svc({sv.MANAGE_DNS: "false"}, ips=("2001:db8:a:0:f000::1",)), SPEC, status((A, "active")))
    assert sv.DNS_TARGET not in p.annotations
    p = sv.plan(
        svc({"metallb.io/address-pool": "v6"}, ips=("2001:db8:a:0:f000::1",)), SPEC, status((A, "active"))
    )
    assert p.annotations[sv.METALLB_IPS] == "2001:db8:a:0:f000::1" and sv.CILIUM_IPS not in p.annotations
    p = sv.plan(svc(ips=("2001:db8:a:0:f000::1",)), SPEC, status((A, "active")), default_annotation="metallb")
    assert sv.METALLB_IPS in p.annotations
    p = sv.plan(svc({sv.CILIUM_IPS_OLD: ""}, ips=("2001:db8:a:0:f000::1",)), SPEC, status((A, "active")))
    assert p.annotations[sv.CILIUM_IPS_OLD] == "2001:db8:a:0:f000::1"


def test_simple_mode_and_non_loadbalancers_are_left_alone() -> None:
    s = svc(ips=("2001:db8:a:0:f000::1",))
    assert sv.plan(s, SIMPLE, status((B, "active"), (A, "draining"))).annotations == {}
    assert (
        sv.plan(
            svc(type_="ClusterIP", ips=("2001:db8:a:0:f000::1",)), SPEC, status((A, "active"))
        ).annotations
        == {}
    )


def test_switching_to_simple_takes_back_what_ha_mode_wrote() -> None:
    s = apply(
        svc(ips=("2001:db8:a:0:f000::1",)),
        sv.plan(svc(ips=("2001:db8:a:0:f000::1",)), SPEC, status((A, "active"))),
    )
    p = sv.plan(s, SIMPLE, status((A, "active")))
    assert p.annotations == {sv.OWNED: None, sv.CILIUM_IPS: None, sv.DNS_TARGET: None}


def test_the_range_annotation_falls_back_and_must_exist() -> None:
    base: dict[str, Any] = {"dynamic-prefix.io/name": "home"}
    s = sv.ServiceView(
        "a", "b", "LoadBalancer", {**base, "dynamic-prefix.io/address-range": "lb"}, ("2001:db8:a:0:f000::1",)
    )
    assert sv.plan(s, SPEC, status((A, "active"))).annotations
    s = sv.ServiceView("a", "b", "LoadBalancer", {**base, sv.SERVICE_RANGE: "nope"}, ())
    assert "not in the DynamicPrefix" in (sv.plan(s, SPEC, status((A, "active"))).problem or "")
    s = sv.ServiceView("a", "b", "LoadBalancer", base, ())
    assert "service-address-range" in (sv.plan(s, SPEC, status((A, "active"))).problem or "")


def test_an_unreadable_record_owns_nothing() -> None:
    s = svc({sv.OWNED: "{oops", sv.CILIUM_IPS: "2001:db8:a:0:f000::99"}, ips=("2001:db8:a:0:f000::1",))
    p = sv.plan(s, SPEC, status((A, "active")))
    assert p.annotations[sv.CILIUM_IPS] == "2001:db8:a:0:f000::1,2001:db8:a:0:f000::99"
    assert json.loads(p.annotations[sv.OWNED] or "{}")[sv.CILIUM_IPS] == ["2001:db8:a:0:f000::1"]


# -- behaviour the real LB-IPAM needs (issue 13; DESIGN.md §3 "Observed on the real cilium-operator") ----


def test_a_users_ipv4_in_the_annotation_makes_clusterd_choose_a_free_offset() -> None:
    # Cilium allocates exactly what lbipam.cilium.io/ips lists: with only the user's IPv4 there,
    # no IPv6 ever arrives, so clusterd picks the first offset free in every prefix it requests.
    s = svc({sv.CILIUM_IPS: "192.0.2.10"}, ips=("192.0.2.10",))
    st = status((B, "active"), (A, "draining"))
    taken = {IPv6Address(a) for a in ("2001:db8:b:0:f000::", "2001:db8:a:0:f000::1", "2001:db8:b:0:f000::2")}
    p = sv.plan(s, SPEC, st, taken=taken)
    assert p.problem is None
    assert p.annotations[sv.CILIUM_IPS] == "2001:db8:b:0:f000::3,2001:db8:a:0:f000::3,192.0.2.10"
    assert p.annotations[sv.DNS_TARGET] == "2001:db8:b:0:f000::3"
    assert set(p.chosen) == {IPv6Address("2001:db8:b:0:f000::3"), IPv6Address("2001:db8:a:0:f000::3")}
    # The choice is recorded: planning again (Cilium has not answered yet) keeps it, and asks for
    # a look at what other Services hold until Cilium gives it.
    s = apply(s, p)
    again = sv.plan(s, SPEC, st, taken=taken)
    assert again.annotations == {} and again.problem is None and again.chosen == () and again.recheck
    # Cilium gave the B pick to another Service before it saw the request: it never comes, choose again.
    rival = sv.plan(s, SPEC, st, taken=taken | {IPv6Address("2001:db8:b:0:f000::3")})
    assert rival.annotations[sv.CILIUM_IPS] == "2001:db8:b:0:f000::4,2001:db8:a:0:f000::4,192.0.2.10"
    assert set(rival.chosen) == {IPv6Address("2001:db8:b:0:f000::4"), IPv6Address("2001:db8:a:0:f000::4")}
    # Once it holds its pick, what others claim does not move it.
    held = replace(s, ingress_ips=("192.0.2.10", "2001:db8:b:0:f000::3"))
    kept = sv.plan(held, SPEC, st, taken=taken | {IPv6Address("2001:db8:b:0:f000::3")})
    assert kept.annotations == {} and not kept.recheck
    # A user's own IPv6 request is what the IPAM will give: its offset is used, nothing is chosen.
    p = sv.plan(svc({sv.CILIUM_IPS: "192.0.2.10,2001:db8:b:0:f000::9"}), SPEC, st, taken=taken)
    assert p.annotations[sv.CILIUM_IPS] == "2001:db8:b:0:f000::9,2001:db8:a:0:f000::9,192.0.2.10"
    assert p.chosen == ()


def test_choosing_fails_clearly_when_the_range_is_full_or_the_service_has_no_ipv6_family() -> None:
    tiny = SPEC.model_copy(update={"address_ranges": [
        SPEC.address_ranges[0].model_copy(update={"start": "::f000:0:0:0", "end": "::f000:0:0:1"})]})  # fmt: skip
    full = {IPv6Address("2001:db8:a:0:f000::"), IPv6Address("2001:db8:a:0:f000::1")}
    p = sv.plan(svc({sv.CILIUM_IPS: "192.0.2.10"}), tiny, status((A, "active")), taken=full)
    assert p.annotations == {} and p.problem is not None and "no free address in range lb" in p.problem
    v4 = replace(svc({sv.CILIUM_IPS: "192.0.2.10"}, ips=("192.0.2.10",)), families=("IPv4",))
    p = sv.plan(v4, SPEC, status((A, "active")))
    assert p.annotations == {} and p.problem is not None and "no IPv6 family" in p.problem


def test_waiting_for_an_address_is_reported_not_in_step() -> None:
    p = sv.plan(svc(), SPEC, status((A, "active")))
    assert p.waiting and p.reason == sv.WAITING and p.problem is not None
    assert "waiting for an address" in p.problem


def test_an_ipv4_the_service_holds_is_kept_as_clusterds_own_value() -> None:
    # A PreferDualStack Service with no annotation: Cilium gave it both families. An IPv6-only
    # annotation would make Cilium drop the IPv4, so the IPv4 it holds is requested too.
    s = svc(ips=("192.0.2.20", "2001:db8:a:0:f000::5"))
    s = apply(s, sv.plan(s, SPEC, status((A, "active"))))
    assert s.annotations[sv.CILIUM_IPS] == "2001:db8:a:0:f000::5,192.0.2.20"
    assert s.annotations[sv.DNS_TARGET] == "2001:db8:a:0:f000::5"
    assert json.loads(s.annotations[sv.OWNED])[sv.CILIUM_IPS] == ["2001:db8:a:0:f000::5", "192.0.2.20"]
    st = status((B, "active"), (A, "draining"))
    s = apply(s, sv.plan(s, SPEC, st))
    assert s.annotations[sv.CILIUM_IPS] == "2001:db8:b:0:f000::5,2001:db8:a:0:f000::5,192.0.2.20"
    # clusterd only echoes what the Service holds: an IPv4 it no longer holds is not asked back.
    gone = replace(s, ingress_ips=("2001:db8:a:0:f000::5",))
    assert apply(gone, sv.plan(gone, SPEC, st)).annotations[sv.CILIUM_IPS] == (
        "2001:db8:b:0:f000::5,2001:db8:a:0:f000::5"
    )
    # clusterd wrote it, so releasing the Service takes it back (the user never asked to pin it) ...
    released = apply(s, sv.plan(s, SIMPLE, st))
    assert sv.CILIUM_IPS not in released.annotations
    # ... while a user's own IPv4 is never clusterd's.
    u = svc({sv.CILIUM_IPS: "192.0.2.20"}, ips=("192.0.2.20", "2001:db8:a:0:f000::5"))
    u = apply(u, sv.plan(u, SPEC, status((A, "active"))))
    assert u.annotations[sv.CILIUM_IPS] == "2001:db8:a:0:f000::5,192.0.2.20"
    assert json.loads(u.annotations[sv.OWNED])[sv.CILIUM_IPS] == ["2001:db8:a:0:f000::5"]


def test_metallb_in_addresses_mode_moves_to_the_new_address_only_and_says_what_it_cannot_keep() -> None:
    s = svc({sv.IP_ANNOTATION: "metallb", HA_MODE: "addresses"}, ips=("2001:db8:a:0:f000::2a", "192.0.2.20"))
    p = sv.plan(s, SPEC, status((B, "active"), (A, "draining")))
    assert p.companions == ()
    assert p.annotations[sv.METALLB_IPS] == "2001:db8:b:0:f000::2a,192.0.2.20"
    assert p.annotations[sv.DNS_TARGET] == "2001:db8:b:0:f000::2a"
    assert p.reason == sv.METALLB_ONE_PER_FAMILY
    assert p.problem == (
        "MetalLB holds one address per family: old connections on 2001:db8:a:0:f000::2a are not kept"
    )
    s = apply(s, p)
    assert sv.plan(s, SPEC, status((B, "active"), (A, "expired"))).problem is None
    # A user's own second IPv6 would make MetalLB allocate nothing: refuse to write, say why.
    u = svc(
        {sv.IP_ANNOTATION: "metallb", sv.METALLB_IPS: "2001:db8:a:0:f000::99"}, ips=("2001:db8:a:0:f000::2a",)
    )
    p = sv.plan(u, SPEC, status((A, "active")))
    assert p.annotations == {} and p.problem is not None and "one address per family" in p.problem


def test_in_companion_mode_the_old_address_is_handed_to_a_companion_once_the_service_let_go_of_it() -> None:
    """MetalLB's default: the Service moves to B alone; A's address goes to a companion, but only
    after MetalLB took it from the Service (a companion asking earlier is refused and not retried)."""
    old, new = IPv6Address("2001:db8:a:0:f000::2a"), "2001:db8:b:0:f000::2a"
    s = svc({sv.IP_ANNOTATION: "metallb"}, ips=(str(old), "192.0.2.20"))
    moving = status((B, "active"), (A, "draining"))
    p = sv.plan(s, SPEC, moving)
    assert p.annotations[sv.METALLB_IPS] == f"{new},192.0.2.20" and p.problem is None
    assert p.companions == (), "the Service still holds A: a companion now would be refused"
    s = apply(replace(s, ingress_ips=(new, "192.0.2.20")), p)
    moved = sv.plan(s, SPEC, moving)
    assert moved.annotations == {} and moved.companions == ((IPv6Network(A), old),)
    assert sv.plan(s, SPEC, status((B, "active"), (A, "expired"))).companions == ()
    # Cilium keeps both addresses on the Service unless asked for companions.
    c = svc({}, ips=(str(old),))
    assert sv.plan(c, SPEC, moving).annotations[sv.CILIUM_IPS] == f"{new},{old}"
    asked = sv.plan(svc({HA_MODE: "companion"}, ips=(str(old),)), SPEC, moving)
    assert asked.annotations[sv.CILIUM_IPS] == new
    assert sv.plan(c, SPEC, moving, default_mode="companion").annotations[sv.CILIUM_IPS] == new


SLASH56 = SPEC.model_copy(update={"address_ranges": [
    SPEC.address_ranges[0].model_copy(update={"start": "::1:0:0:0:0", "end": "::1:0:0:0:ffff"})]})  # fmt: skip


def test_the_dns_target_never_moves_to_a_draining_prefix() -> None:
    # The range needs a /56: it fits the draining 2001:db8:a00::/56 but not the current /64.
    st = status(("2001:db8:c::/64", "active"), ("2001:db8:a00::/56", "draining"))
    s = svc(ips=("2001:db8:a00:1::5",))
    p = sv.plan(s, SLASH56, st)
    assert sv.DNS_TARGET not in p.annotations
    assert p.problem is not None and "does not fit the current prefix 2001:db8:c::/64" in p.problem
    no_current = status(("2001:db8:a00::/56", "draining"))
    p = sv.plan(s, SLASH56, no_current)
    assert p.annotations == {} and p.problem is not None and "no current prefix" in p.problem


@given(strategies.sets(strategies.integers(0, 40)), strategies.sets(strategies.integers(0, 40)))
def test_the_chosen_offset_is_the_lowest_free_in_every_prefix(in_b: set[int], in_a: set[int]) -> None:
    taken = {IPv6Address(f"2001:db8:b:0:f000::{o:x}") for o in in_b} | {
        IPv6Address(f"2001:db8:a:0:f000::{o:x}") for o in in_a
    }
    p = sv.plan(svc({sv.CILIUM_IPS: "192.0.2.10"}), SPEC, status((B, "active"), (A, "draining")), taken=taken)
    lowest = min(set(range(82)) - in_b - in_a)
    assert p.chosen == (
        IPv6Address(f"2001:db8:b:0:f000::{lowest:x}"),
        IPv6Address(f"2001:db8:a:0:f000::{lowest:x}"),
    )
    assert not set(p.chosen) & taken
