"""End to end in a network lab: the ISP's radvd changes the prefix; the cluster follows.

radvd (router namespace) -> routerd (host namespace) -> Mosquitto -> clusterd
-> DynamicPrefix status and pool blocks, A then B; the same over the signed
webhook; clusterd's own RA listener doing it without routerd; and that
listener taking over from a routerd gone silent long ago, without letting
routerd's old messages back in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.clusterd.test_clusterd import RANGE, V4, block, create_dp, create_pool, current, get_dp, get_pool
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import WEBHOOK_SECRET, Clusterd
from tests.ground.messages import post_state, prefix, state
from tests.ground.mosquitto import Mosquitto
from tests.ground.mqttclient import publish
from tests.ground.netlab import AdvPrefix, Lab
from tests.ground.routerd_proc import Routerd, routerd_toml
from tests.ground.waiting import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.apiserver, pytest.mark.mqtt]

A, B, C = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64"


def follow(cluster: KubeAPI, lab: Lab) -> None:
    """A, then the ISP renumbers to B (RFC 9096 style): status and pool follow."""
    wait_until(lambda: current(cluster) == A, timeout=30, what="status.currentPrefix = A")
    wait_until(lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(A)], what="pool has A")
    lab.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, valid=3600, preferred=1800)])
    wait_until(lambda: current(cluster) == B, timeout=30, what="status.currentPrefix = B")
    wait_until(lambda: get_pool(cluster, "lb-pool")["spec"]["blocks"] == [V4, block(B), block(A)],
               what="pool has B, A draining")  # fmt: skip
    history = get_dp(cluster)["status"]["history"]
    assert [(h["prefix"], h["state"]) for h in history] == [(B, "active"), (A, "draining")]


@pytest.fixture
def started() -> Any:
    procs: list[Any] = []
    yield procs
    for p in procs:
        p.stop()


def test_radvd_to_routerd_to_mosquitto_to_clusterd(
    lab: Lab, cluster: KubeAPI, mosquitto: Mosquitto, tmp_path: Path, started: list[Any]
) -> None:
    create_dp(cluster, router="edge", interface=lab.host_if)
    create_pool(cluster, "lb-pool", [V4])
    cd = Clusterd(cluster, tmp_path / "clusterd", mqtt_port=mosquitto.plain_port, webhook=False)
    started.append(cd)
    cd.wait_ready()
    lab.forward(mosquitto.plain_port)
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    started.append(
        Routerd(lab, tmp_path / "routerd", routerd_toml(lab.host_if, mqtt_port=mosquitto.plain_port))
    )
    follow(cluster, lab)
    assert get_dp(cluster)["status"]["source"]["transport"] == "mqtt"


def test_radvd_to_routerd_to_the_webhook(
    lab: Lab, cluster: KubeAPI, tmp_path: Path, started: list[Any]
) -> None:
    create_dp(cluster, router="edge", interface=lab.host_if)
    create_pool(cluster, "lb-pool", [V4])
    cd = Clusterd(cluster, tmp_path / "clusterd")
    started.append(cd)
    cd.wait_ready()
    lab.forward(cd.webhook_port)
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    toml = routerd_toml(lab.host_if, webhook_url=cd.webhook_url, webhook_secret_file=cd.secret_file)
    started.append(Routerd(lab, tmp_path / "routerd", toml))
    follow(cluster, lab)
    assert get_dp(cluster)["status"]["source"]["transport"] == "webhook"


def test_clusterd_alone_with_its_ra_fallback(
    lab: Lab, cluster: KubeAPI, tmp_path: Path, started: list[Any]
) -> None:
    create_dp(cluster, acquisition={"routerAdvertisement": {"interface": lab.host_if, "enabled": True}},
              addressRanges=[RANGE])  # fmt: skip
    create_pool(cluster, "lb-pool", [V4])
    lab.forward(cluster.port)  # clusterd runs in the host namespace, the API server in the root one
    cd = Clusterd(cluster, tmp_path / "clusterd", webhook=False, netns=lab.host, extra={"raFallback": True})
    started.append(cd)
    lab.forward(cd.health_port, into_netns=True)
    cd.wait_ready()
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    follow(cluster, lab)
    status = get_dp(cluster)["status"]
    assert status["prefixSource"] == "router-advertisement" and status["source"]["transport"] == "raw-socket"


def test_a_routerd_silent_for_an_hour_leaves_the_prefix_to_the_ra_fallback(
    lab: Lab, cluster: KubeAPI, mosquitto: Mosquitto, tmp_path: Path, started: list[Any], mqtt_base: str
) -> None:
    """routerd published A an hour ago (retained, sequence 7) and went silent. clusterd takes A from
    it, then radvd advertises B: the retained A is no sign of life, so the RA fallback takes B at
    once. After a restart routerd's sequence 7 is still refused; sequence 8 is routerd back."""
    router = mqtt_base.rsplit("/", 1)[1]
    topic = f"dynamic-prefix/{router}/br-lan/state"
    create_dp(cluster, router=router, acquisition={
        "routerd": {"router": router, "interface": "br-lan"},
        "routerAdvertisement": {"interface": lab.host_if, "enabled": True, "fallbackAfterSeconds": 600},
    })  # fmt: skip
    # Published with two hours left an hour ago: routerd set the expiry to 7200 s, the broker has
    # counted it down to 3600 s since.
    publish(mosquitto.plain_port, topic, json.dumps(state(router, "br-lan", 7, prefix(A, valid=7200, preferred=3600))),
            retain=True, expiry=3600)  # fmt: skip
    lab.forward(cluster.port)
    lab.forward(mosquitto.plain_port)

    def start(n: int) -> Clusterd:
        cd = Clusterd(cluster, tmp_path / f"clusterd-{n}", mqtt_port=mosquitto.plain_port, netns=lab.host,
                      extra={"raFallback": True})  # fmt: skip
        started.append(cd)
        lab.forward(cd.health_port, into_netns=True)
        assert cd.webhook_port is not None
        lab.forward(cd.webhook_port, into_netns=True)
        cd.wait_ready()
        return cd

    cd = start(0)
    wait_until(lambda: current(cluster) == A, what="A from the retained message")
    lab.start_radvd([AdvPrefix(B, valid=3600, preferred=1800)])
    wait_until(lambda: current(cluster) == B, timeout=30, what="B from the RA fallback at once")
    assert get_dp(cluster)["status"]["prefixSource"] == "router-advertisement"

    publish(mosquitto.plain_port, topic, b"", retain=True)  # only the webhook speaks for routerd now
    cd.stop()
    cd = start(1)
    got, text = post_state(cd.webhook_url, WEBHOOK_SECRET, state(router, "br-lan", 7, prefix(A)))
    assert got == 409 and "not newer" in text, text
    assert current(cluster) == B
    got, text = post_state(
        cd.webhook_url, WEBHOOK_SECRET, state(router, "br-lan", 8, prefix(C), prefix(B, "deprecated"))
    )
    assert got == 200, text
    status = get_dp(cluster)["status"]
    assert (status["currentPrefix"], status["prefixSource"]) == (C, "routerd")
