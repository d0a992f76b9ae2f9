"""Renumbering cost and message age, with clusterd as a process on the real API server and Mosquitto.

Six successive renumberings with maxPrefixHistory 2 and the old prefixes still
listed (RFC 9096): each costs one status write and one change per pool, and a
pruned prefix never comes back. A retained message's lifetimes count from its
publication: over MQTT 5 from the expiry the broker counted down, over 3.1.1
(a broker that refuses MQTT 5) from its observedAt.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.clusterd.test_clusterd import (
    V4,
    block,
    condition,
    create_dp,
    create_group,
    create_pool,
    current,
    get_dp,
    get_pool,
    send,
)
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import WEBHOOK_SECRET
from tests.ground.messages import post_state, prefix, state
from tests.ground.mosquitto import Mosquitto
from tests.ground.mqttclient import publish
from tests.ground.netlab import pump
from tests.ground.waiting import wait_until

pytestmark = [pytest.mark.apiserver, pytest.mark.mqtt]

SIX = [f"2001:db8:{c}::/64" for c in "fedcba"]
"""In the order the ISP hands them out; their text sorts the other way round (it must not matter)."""


def events_of(kube: KubeAPI, obj: dict[str, Any]) -> Counter[str]:
    """Event reasons recorded for exactly this object (other tests' objects had the same name)."""
    evs = k8s.CoreV1Api(kube.admin()).list_event_for_all_namespaces().items
    return Counter(e.reason for e in evs if e.involved_object.uid == obj["metadata"]["uid"])


def test_six_renumberings_cost_one_change_each_and_a_pruned_prefix_stays_pruned(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)  # maxPrefixHistory: 2
    create_pool(cluster, "lb-pool", [V4])
    create_group(cluster, "cluster-egress", ["198.51.100.0/24"])
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port)
    cd.wait_ready()
    wait_until(
        lambda: condition(get_dp(cluster), "PoolsSynced") == ("True", "Synced"), what="the first status"
    )

    def writes() -> tuple[float, float]:
        return (cd.metric("dynamic_prefix_api_writes_total", resource="status"),
                cd.metric("dynamic_prefix_api_writes_total", resource="pool"))  # fmt: skip

    seq = 0
    spent: list[tuple[int, int]] = []
    seen: list[tuple[list[str], list[Any]]] = []
    for i, new in enumerate(SIX):
        older = list(reversed(SIX[:i]))  # still advertised with lifetimes 0: routerd lists them withdrawn
        listed = [prefix(new), *(prefix(p, "withdrawn", valid=7200 - 60 * n) for n, p in enumerate(older))]
        before = writes()
        seq += 1
        send(mosquitto, state(router, "br-lan", seq, *listed))  # routerd -> MQTT
        wait_until(lambda n=new: current(cluster) == n, what=f"current prefix {new}")
        # A heartbeat over the webhook: its 200 comes from a reconcile that started after it, so
        # all the renumbering wrote is done by then, and whatever the heartbeat wrote too.
        seq += 1
        got, text = post_state(cd.webhook_url, WEBHOOK_SECRET, state(router, "br-lan", seq, *listed))
        assert got == 200, text
        after = writes()
        spent.append((int(after[0] - before[0]), int(after[1] - before[1])))
        history = [h["prefix"] for h in get_dp(cluster)["status"]["history"]]
        seen.append((history, get_pool(cluster, "lb-pool")["spec"]["blocks"]))
    dp = get_dp(cluster)
    events = events_of(cluster, dp)
    print(f"(status writes, pool writes) per renumbering: {spent}; Events: {dict(events)}")
    # The newest two old prefixes stay (and their blocks), whatever their text.
    for i, (history, blocks) in enumerate(seen):
        keep = [SIX[i], *reversed(SIX[max(0, i - 2) : i])]
        assert (history, blocks) == (keep, [V4, *map(block, keep)]), f"after {SIX[i]}"
    # One status write each, and one write per pool: simple mode writes no Service, so a pool that
    # gains the new block and loses a pruned one changes in a single write.
    assert spent == [(1, 2)] * 6
    assert (events["PrefixAcquired"], events["PrefixChanged"], events["PrefixPruned"]) == (1, 5, 3)
    assert sorted(dp["status"]["pruned"]) == sorted(SIX[:3])
    assert get_pool(cluster, "cluster-egress", "ciliumcidrgroups")["spec"]["externalCIDRs"] == [
        "198.51.100.0/24", *SIX[-1:-4:-1]]  # fmt: skip


def _utc(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def test_a_retained_mqtt5_message_counts_its_lifetimes_from_its_publication(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    # routerd published A with two hours left an hour ago: it set the expiry to the longest valid
    # lifetime (7200 s) and the broker has counted it down to 3600 s since.
    publish(mosquitto.plain_port, f"dynamic-prefix/{router}/br-lan/state",
            json.dumps(state(router, "br-lan", 1, prefix("2001:db8:a::/64", valid=7200, preferred=3600))),
            retain=True, expiry=3600)  # fmt: skip
    start = _now()
    cd = clusterd_factory(mqtt_port=mosquitto.plain_port, webhook=False)
    cd.wait_ready()
    wait_until(lambda: current(cluster) == "2001:db8:a::/64", what="A from the retained message")
    status = get_dp(cluster)["status"]
    lease = _utc(status["leaseExpiresAt"])
    assert abs(lease - (start + timedelta(hours=1))) < timedelta(minutes=1), lease  # not start + 2 h
    published = _utc(status["source"]["receivedAt"])
    assert abs(published - (start - timedelta(hours=1))) < timedelta(minutes=1), published


class RefusesMQTT5:
    """A broker that speaks only MQTT 3.1.1, played by a proxy in front of the real Mosquitto.

    It answers an MQTT 5 CONNECT the way MQTT 3.1.1 §3.1.2.2 says a server must (CONNACK return
    code 1, unacceptable protocol level, then disconnect) and passes anything else through.
    Mosquitto itself cannot be told to refuse MQTT 5.
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.refused = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            first = conn.recv(4096)  # the CONNECT: header, remaining length, "\0\4MQTT", level
            at = 1
            while first[at] & 0x80:
                at += 1
            if first[at + 7] == 5:
                self.refused += 1
                conn.sendall(b"\x20\x02\x00\x01")
                return
            with socket.create_connection(("127.0.0.1", self.upstream)) as up:
                up.sendall(first)
                threading.Thread(target=pump, args=(up, conn), daemon=True).start()
                pump(conn, up)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def old_broker(mosquitto: Mosquitto) -> Iterator[RefusesMQTT5]:
    proxy = RefusesMQTT5(mosquitto.plain_port)
    yield proxy
    proxy.close()


def test_over_mqtt311_a_retained_messages_age_comes_from_its_observed_at(
    cluster: KubeAPI, mosquitto: Mosquitto, clusterd_factory: Any, mqtt_base: str, old_broker: RefusesMQTT5
) -> None:
    router = mqtt_base.rsplit("/", 1)[1]
    create_dp(cluster, router=router)
    hour_ago = _now() - timedelta(hours=1)
    doc = state(router, "br-lan", 1, prefix("2001:db8:a::/64", valid=7200, preferred=3600))
    doc["observedAt"] = hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
    publish(mosquitto.plain_port, f"dynamic-prefix/{router}/br-lan/state", json.dumps(doc), retain=True)
    cd = clusterd_factory(mqtt_port=old_broker.port, webhook=False)
    cd.wait_ready()
    wait_until(lambda: current(cluster) == "2001:db8:a::/64", what="A over MQTT 3.1.1")
    assert old_broker.refused >= 1 and "falling back to 3.1.1" in cd.log()
    lease = _utc(get_dp(cluster)["status"]["leaseExpiresAt"])
    assert abs(lease - (hour_ago + timedelta(hours=2))) < timedelta(seconds=5), lease
