"""Scale: 50 DynamicPrefixes with 20 pools each (1,000 pools), all renumbered at once."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client as k8s

from bench.common import open_fds, rss_mb
from tests.ground.apiserver import KubeAPI
from tests.ground.clusterd_proc import Barrier, Clusterd
from tests.ground.messages import prefix, state
from tests.ground.mosquitto import Mosquitto
from tests.ground.mqttclient import publish
from tests.ground.waiting import wait_until
from tests.reliability.pipeline import USER_V4, block

pytestmark = [pytest.mark.apiserver, pytest.mark.mqtt, pytest.mark.timeout(400)]

DPS, POOLS = 50, 20


def pfx(i: int, gen: int) -> str:
    return f"2001:db8:{gen:x}{i:02x}::/64"


def test_fifty_prefixes_with_twenty_pools_each(cluster: KubeAPI, mosquitto: Mosquitto, mqtt_base: str,
                                               tmp_path: Path) -> None:  # fmt: skip
    custom = k8s.CustomObjectsApi(cluster.admin())
    run = mqtt_base.rsplit("/", 1)[1]

    def create(i: int) -> None:
        custom.create_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes", {
            "apiVersion": "dynamic-prefix.io/v1alpha1", "kind": "DynamicPrefix", "metadata": {"name": f"dp-{i}"},
            "spec": {"acquisition": {"routerd": {"router": f"{run}-r{i}", "interface": "lan"}},
                     "addressRanges": [{"name": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
                     "transition": {"mode": "simple", "maxPrefixHistory": 2}}})  # fmt: skip
        for j in range(POOLS):
            custom.create_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools", {
                "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
                "metadata": {"name": f"dp-{i}-pool-{j}", "annotations": {
                    "dynamic-prefix.io/name": f"dp-{i}", "dynamic-prefix.io/address-range": "lb"}},
                "spec": {"blocks": [USER_V4]}})  # fmt: skip

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(create, range(DPS)))
    # With its webhook (the default): for the barrier.
    cd = Clusterd(cluster, tmp_path / "clusterd", mqtt_port=mosquitto.plain_port)
    try:
        cd.wait_ready(timeout=60)

        def settled() -> bool:
            items = custom.list_cluster_custom_object("dynamic-prefix.io", "v1alpha1", "dynamicprefixes")[
                "items"
            ]
            return len(items) == DPS and all(o.get("status", {}).get("conditions") for o in items)

        wait_until(settled, timeout=60, what="clusterd's first pass over every DynamicPrefix", step=0.5)
        barrier = Barrier(cluster, cd)

        def send(gen: int) -> None:
            for i in range(DPS):
                prefixes = [prefix(pfx(i, gen))] + (
                    [prefix(pfx(i, gen - 1), "deprecated", valid=7200)] if gen > 1 else []
                )
                doc = state(f"{run}-r{i}", "lan", gen, *prefixes)
                publish(
                    mosquitto.plain_port, f"dynamic-prefix/{run}-r{i}/lan/state", json.dumps(doc), retain=True
                )

        def all_pools(gen: int) -> bool:
            items = custom.list_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools")["items"]
            want = {f"dp-{i}-pool-{j}": block(pfx(i, gen)) for i in range(DPS) for j in range(POOLS)}
            have = {o["metadata"]["name"]: o["spec"]["blocks"] for o in items}
            return all(
                len(have.get(n, [])) > 1 and have[n][1] == b and have[n][0] == USER_V4
                for n, b in want.items()
            )

        for gen in (1, 2):
            writes = cd.metric("dynamic_prefix_api_writes_total")
            t0 = time.monotonic()
            send(gen)
            wait_until(
                lambda g=gen: all_pools(g), timeout=180, what=f"1,000 pools on generation {gen}", step=0.5
            )
            took = time.monotonic() - t0
            # A pool is seen written before clusterd counts the write, and the reconcile may go on
            # writing: count once every reconcile these messages started has ended.
            barrier.wait()
            spent = cd.metric("dynamic_prefix_api_writes_total") - writes
            print(f"generation {gen}: 1,000 pools in {took:.1f} s with {spent:.0f} API writes")
            # Exactly the objects that changed: one status per DynamicPrefix, one write per pool.
            assert spent == DPS * POOLS + DPS, f"{spent} writes"
        items = custom.list_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools")["items"]
        for o in items:  # the previous prefix still drains everywhere: no block lost
            i = int(o["metadata"]["name"].split("-")[1])
            assert block(pfx(i, 1)) in o["spec"]["blocks"]
        assert rss_mb(cd.proc.pid) < 300 and open_fds(cd.proc.pid) < 100
    finally:
        cd.stop()
