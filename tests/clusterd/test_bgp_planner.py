"""The CiliumBGPAdvertisement planner (pure): which advertisements exist, what each holds, when one goes.

The end-to-end test on the real API server is test_bgp_advertisements.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from clusterd.crd import DynamicPrefixSpec, DynamicPrefixStatus
from clusterd.targets.base import Context, Delete, Patch
from clusterd.targets.bgp_advertisement import EVERY_SERVICE, TARGET, communities

OWNER = {"metadata": {"name": "home", "uid": "u-1"}}


def spec(*subnets: dict[str, Any]) -> DynamicPrefixSpec:
    return DynamicPrefixSpec.model_validate(
        {"acquisition": {"routerd": {"router": "r", "interface": "i"}}, "subnets": list(subnets)}
    )


def subnet(name: str = "svc", advertise: bool = True, community: str | None = None) -> dict[str, Any]:
    bgp: dict[str, Any] = {"advertise": advertise}
    if community:
        bgp["community"] = community
    return {"name": name, "offset": 1, "prefixLength": 112, "bgp": bgp}


def pool(name: str, subnet_name: str | None, selector: dict[str, Any] | None = None) -> dict[str, Any]:
    ann = {"dynamic-prefix.io/name": "home"} | (
        {"dynamic-prefix.io/subnet": subnet_name} if subnet_name else {}
    )
    return {"metadata": {"name": name, "annotations": ann},
            "spec": {"blocks": []} | ({"serviceSelector": selector} if selector else {})}  # fmt: skip


def ctx(*pools: dict[str, Any]) -> Context:
    return Context(None, owner=OWNER, following=lambda kind: list(pools))


def advert(body: dict[str, Any]) -> dict[str, Any]:
    """An object as the API server returns it."""
    return {**body, "metadata": {**body["metadata"], "resourceVersion": "7"}}


def entry(selector: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"advertisementType": "Service", "service": {"addresses": ["LoadBalancerIP"]}, "selector": selector,
            **extra}  # fmt: skip


SEL = {"matchLabels": {"bgp": "yes"}}
STATUS = DynamicPrefixStatus()


def test_one_advertisement_per_advertised_subnet_with_the_selectors_of_its_pools() -> None:
    s = spec(subnet("svc", community="65000:100"), subnet("quiet", advertise=False))
    c = ctx(pool("b", "svc"), pool("a", "svc", SEL), pool("other", None, {"matchLabels": {"x": "y"}}))
    [body] = [c.body for c in TARGET.creates(s, STATUS, c)]
    assert body["metadata"]["name"] == "home-svc"
    assert body["metadata"]["labels"] == {"dynamic-prefix.io/name": "home", "dynamic-prefix.io/subnet": "svc",
                                          "app.kubernetes.io/managed-by": "dynamic-prefix"}  # fmt: skip
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    communities_attr = {"communities": {"standard": ["65000:100"]}}
    # Pools in name order; a pool without a serviceSelector serves every Service.
    assert body["spec"]["advertisements"] == [entry(SEL, attributes=communities_attr),
                                              entry(EVERY_SERVICE, attributes=communities_attr)]  # fmt: skip
    assert TARGET.follows(advert(body)) == "home"
    assert TARGET.desired(s, STATUS, advert(body), c).final is None  # in step: no write


def test_a_changed_community_or_selector_is_patched_and_advertise_off_deletes() -> None:
    c = ctx(pool("a", "svc", SEL))
    [body] = [c.body for c in TARGET.creates(spec(subnet(community="65000:100")), STATUS, c)]
    p = TARGET.desired(spec(subnet(community="65000:200")), STATUS, advert(body), c)
    assert p.final == Patch(
        {}, "advertisements", [entry(SEL, attributes={"communities": {"standard": ["65000:200"]}})]
    )
    moved = ctx(pool("a", "svc", {"matchLabels": {"bgp": "v2"}}))
    p = TARGET.desired(spec(subnet(community="65000:100")), STATUS, advert(body), moved)
    assert isinstance(p.final, Patch)
    assert p.final.entries is not None and p.final.entries[0]["selector"] == {"matchLabels": {"bgp": "v2"}}
    assert TARGET.desired(spec(subnet(advertise=False)), STATUS, advert(body), c).final == Delete()
    assert TARGET.desired(spec(), STATUS, advert(body), c).final == Delete()  # the subnet removed
    assert TARGET.desired(None, None, advert(body), c).final == Delete()


def test_no_pool_takes_the_subnet_advertises_nothing_and_says_why() -> None:
    [body] = [c.body for c in TARGET.creates(spec(subnet()), STATUS, ctx(pool("a", "other")))]
    assert body["spec"]["advertisements"] == []
    p = TARGET.desired(spec(subnet()), STATUS, advert(body), ctx())
    assert p.final is None
    assert p.problem is not None and "no CiliumLoadBalancerIPPool takes it" in p.problem


def test_a_users_own_advertisement_is_not_followed() -> None:
    mine = {"metadata": {"name": "home-svc", "labels": {"dynamic-prefix.io/name": "home"}}, "spec": {}}
    assert TARGET.follows(mine) is None


@pytest.mark.parametrize(
    ("community", "field"),
    [
        ("65000:100", "standard"),
        ("4259840100", "standard"),
        ("65000:1:2", "large"),
        ("no-export", "wellKnown"),
    ],
)
def test_a_community_goes_in_the_field_cilium_reads_it_from(community: str, field: str) -> None:
    assert communities(community) == {field: [community]}
