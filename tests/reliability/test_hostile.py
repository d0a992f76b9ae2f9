"""Hostile input against the running pipeline: nothing bad is applied, nothing good is lost.

RAs are injected on the wire next to the real router; MQTT messages come
from a client the broker's ACL forbids, or are garbage; a user edits a block
clusterd owns. (Hostile webhook requests: tests/clusterd/test_clusterd.py::
test_webhook_refuses_bad_input_with_4xx_and_writes_nothing; invalid
DynamicPrefixes: tests/clusterd/test_crd_api.py; pools naming a missing
DynamicPrefix or range: test_clusterd.py::test_a_pool_naming_a_missing_range.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from routerd.core import ra
from tests.clusterd.test_clusterd import create_dp, current
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import Clusterd
from tests.ground.messages import prefix, state
from tests.ground.mosquitto import USERS, Mosquitto
from tests.ground.mqttclient import publish
from tests.ground.netlab import AdvPrefix, Lab
from tests.ground.waiting import wait_until
from tests.reliability.pipeline import USER_STATIC, USER_V4, Pipeline, block

A = "2001:db8:a::/64"
EVIL = IPv6Network("2001:db8:666::/64")


@pytest.fixture
def pipe(cluster: KubeAPI, lab: Lab, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(cluster, lab, tmp_path)
    yield p
    p.close()


def evil_ra(**kw: Any) -> bytes:
    return ra.RouterAdvertisement(
        preference=ra.RouterPreference.HIGH, options=(ra.PrefixInformation(EVIL, 86400, 86400),), **kw
    ).pack()


@pytest.mark.lab
@pytest.mark.apiserver
@pytest.mark.mqtt
@pytest.mark.timeout(180)
def test_rogue_and_malformed_ras_change_nothing(pipe: Pipeline, lab: Lab) -> None:
    pipe.start_clusterd()
    pipe.advertise([AdvPrefix(A, valid=86400, preferred=14400)], start=True)
    router = lab.router_ll  # the real router (before a second link-local address joins the link)
    # A lifetime alone is not a change routerd publishes at once; its heartbeat carries the new one.
    r = pipe.start_routerd(allowed_routers=[router], heartbeat=5)
    pipe.wait_current(A)
    lab.inject_ra(evil_ra(), hop_limit=64)  # forwarded or forged
    lab.add_address(lab.router, lab.router_if, "2001:db8:ffff::1/64")
    lab.inject_ra(evil_ra(), source="2001:db8:ffff::1")  # off-link, global source
    lab.add_address(lab.router, lab.router_if, "fe80::bad/64")
    lab.inject_ra(evil_ra(), source="fe80::bad")  # not the allowlisted router
    flood = tuple(
        ra.PrefixInformation(IPv6Network(f"2001:db8:{i:x}::/64"), 86400, 86400) for i in range(100, 200)
    )
    lab.inject_ra(ra.RouterAdvertisement(options=flood).pack(), source=router)  # 100 PIOs (fragmented)
    lab.inject_ra(evil_ra()[:20], source=router)  # truncated
    packet = evil_ra()
    lab.inject_ra(packet[:17] + b"\x00" + packet[18:], source=router)  # zero-length option
    short = ra.RouterAdvertisement(options=(ra.PrefixInformation(IPv6Network(A), 60, 30),)).pack()
    lab.inject_ra(short, source=router)  # try to cut A's lifetime to a minute
    for reason in ("hop-limit", "source-not-link-local", "router-not-allowed", "too-many-prefixes", "truncated",
                   "zero-length-option"):  # fmt: skip
        r.wait_log(reason)
    # The short RA came last: once its lifetime is published and applied, everything before it was judged.
    published: set[str] = set()

    def short_published(m: dict[str, Any]) -> bool:
        published.update(p["prefix"] for p in m["prefixes"])
        return any(p["prefix"] == A and p["validLifetime"] <= 7200 for p in m["prefixes"])

    cut = r.wait_for(short_published)
    assert published == {A}, "routerd published an injected prefix"
    wait_until(
        lambda: pipe.dp()["status"]["source"]["sequence"] >= cut["sequence"], 20, "the last state applied"
    )
    status = pipe.dp()["status"]
    assert status["currentPrefix"] == A and [h["prefix"] for h in status["history"]] == [A]
    assert pipe.pool() == [USER_V4, USER_STATIC, block(A)], "a block of an injected prefix (666, flood)"
    until = datetime.strptime(status["history"][0]["validUntil"], "%Y-%m-%dT%H:%M:%SZ")
    assert until > datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=115), "RFC 4862's two-hour rule"
    assert r.proc.poll() is None
    pipe.check_invariants()


@pytest.mark.apiserver
@pytest.mark.mqtt
def test_hostile_mqtt_messages_change_nothing(cluster: KubeAPI, mosquitto: Mosquitto, mqtt_base: str,
                                             tmp_path: Path) -> None:  # fmt: skip
    router = mqtt_base.rsplit("/", 1)[1]
    topic = f"dynamic-prefix/{router}/lan/state"
    create_dp(cluster, router=router, interface="lan")
    password = tmp_path / "pw"
    password.write_text(USERS["clusterd"])
    cd = Clusterd(cluster, tmp_path / "cd", webhook=False, extra={"mqtt": {
        "host": "127.0.0.1", "port": mosquitto.auth_port, "tls": False, "username": "clusterd",
        "passwordFile": str(password)}})  # fmt: skip
    try:
        cd.wait_ready()

        def send(payload: str, user: str = "routerd", retain: bool = True) -> None:
            publish(mosquitto.auth_port, topic, payload, retain=retain, username=user, password=USERS[user])

        send(json.dumps(state(router, "lan", 10, prefix(A))))
        wait_until(lambda: current(cluster) == A, what="the genuine state")
        send(json.dumps(state(router, "lan", 11, prefix(str(EVIL)))), user="intruder")  # the ACL drops it
        send("{not json")
        send(json.dumps({**state(router, "lan", 12, prefix(str(EVIL))), "version": 7}))
        send(json.dumps(state(router, "lan", 9, prefix(str(EVIL)))))  # older than what was applied
        send(json.dumps(state("someone-else", "lan", 50, prefix(str(EVIL)))))  # topic and payload disagree
        send("")  # an emptied retained message
        wait_until(lambda: cd.metric("dynamic_prefix_messages_total", transport="mqtt", result="invalid") >= 2
                   and cd.metric("dynamic_prefix_messages_total", transport="mqtt", result="stale") >= 1
                   and cd.metric("dynamic_prefix_messages_total", transport="mqtt", result="topic-mismatch") >= 1,
                   what="the garbage counted")  # fmt: skip
        assert current(cluster) == A and cd.proc.poll() is None
        assert "666" not in json.dumps(k8s.CustomObjectsApi(cluster.admin()).get_cluster_custom_object(
            "dynamic-prefix.io", "v1alpha1", "dynamicprefixes", "home"))  # fmt: skip
    finally:
        cd.stop()


@pytest.mark.lab
@pytest.mark.apiserver
@pytest.mark.mqtt
def test_a_user_editing_a_managed_block_gets_ours_back_and_keeps_theirs(pipe: Pipeline) -> None:
    pipe.start_clusterd()
    pipe.advertise([AdvPrefix(A, valid=86400, preferred=14400)], start=True)
    pipe.start_routerd()
    pipe.wait_current(A)
    ours = block(A)
    edited = {**ours, "stop": ours["stop"].replace("ffff:ffff:ffff:ffff", "ffff:ffff:ffff:0")}
    blocks = [edited if b == ours else b for b in pipe.pool()]
    k8s.CustomObjectsApi(pipe.kube.admin()).patch_cluster_custom_object(
        "cilium.io", "v2", "ciliumloadbalancerippools", "lb-pool", {"spec": {"blocks": blocks}}
    )
    wait_until(lambda: ours in pipe.pool(), what="clusterd restores its own block")
    pool = pipe.pool()
    assert edited in pool and USER_V4 in pool, "the user's edit is theirs now and stays"
    pipe.check_invariants()
