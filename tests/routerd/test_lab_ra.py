"""routerd end to end in network labs: radvd and hand-made RAs -> routerd -> stdout and Mosquitto.

routerd runs as a real process in the host namespace, listening on a raw
socket and netlink; the ISP side is radvd (or injected packets).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from routerd.cli import control_request
from routerd.core import ra
from tests.ground.mosquitto import Mosquitto
from tests.ground.mqttclient import Subscriber
from tests.ground.netlab import AdvPrefix, Lab
from tests.ground.routerd_proc import Routerd, current, states
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.lab

A, B = "2001:db8:a::/64", "2001:db8:b::/64"


def config(
    lab: Lab, extra: str = "", ra: bool = True, netlink: bool = True, control: Path | None = None
) -> str:
    return f"""
router_id = "edge"
{f'control_socket = "{control}"' if control else ""}
[publish]
hold_down = 0.5
heartbeat = 300
[[interface]]
name = "{lab.host_if}"
ra = {str(ra).lower()}
netlink = {str(netlink).lower()}
{extra}
"""


def test_prefix_change_and_withdrawal_reach_a_subscriber_over_mqtt(
    lab: Lab, mosquitto: Mosquitto, mqtt_base: str, tmp_path: Path
) -> None:
    base = mqtt_base.removeprefix("dynamic-prefix/")
    mqtt = f"""
[stdout]
enabled = true
[mqtt]
host = "127.0.0.1"
port = {mosquitto.plain_port}
tls = false
base_topic = "dynamic-prefix/{base}"
"""
    lab.forward(mosquitto.plain_port)  # the broker is on the root namespace's loopback
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", config(lab, mqtt))
    try:
        msg = r.wait_for(lambda m: current(m) == A)
        assert msg["router"] == "edge" and msg["interface"] == lab.host_if
        topic = f"{mqtt_base}/edge/{lab.host_if}/state"
        with Subscriber(mosquitto.plain_port, topic) as early:  # may see it live or retained
            early.wait_for(lambda m: json.loads(m.payload)["sequence"] == msg["sequence"])
        with Subscriber(mosquitto.plain_port, f"{mqtt_base}/#") as sub:
            got = sub.wait_for(lambda m: m.topic == topic)
            assert got.retain and json.loads(got.payload)["sequence"] == msg["sequence"]
            avail = sub.wait_for(lambda m: m.topic.endswith("/availability"))
            assert avail.payload == b"online"
            lab.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, valid=3600, preferred=1800)])
            changed = r.wait_for(lambda m: current(m) == B)
            assert states(changed) == {B: "preferred", A: "withdrawn"}
            assert changed["sequence"] > msg["sequence"]
            got = sub.wait_for(
                lambda m: m.topic == topic and json.loads(m.payload)["sequence"] == changed["sequence"]
            )
            assert json.loads(got.payload)["prefixes"][0]["prefix"] == B
        assert r.stop() == 0
        with Subscriber(mosquitto.plain_port, f"{mqtt_base}/#") as sub:
            avail = sub.wait_for(lambda m: m.topic.endswith("/availability"))
            assert avail.payload == b"offline"  # SIGTERM publishes offline
            retained = sub.wait_for(lambda m: m.topic == topic)
            assert json.loads(retained.payload)["sequence"] == changed["sequence"]
    finally:
        r.stop()


def test_lifetimes_run_out_without_refresh(lab: Lab, tmp_path: Path) -> None:
    lab.start_radvd([AdvPrefix(A, valid=6, preferred=3)], interval=(3, 4))
    r = Routerd(lab, tmp_path / "r", config(lab, netlink=False) + "\n[tracker]\nwithdrawn_retention = 1\n")
    try:
        r.wait_for(lambda m: current(m) == A)
        lab.stop_radvd()  # no more refreshes
        t0 = time.monotonic()
        dep = r.wait_for(lambda m: states(m).get(A) == "deprecated", timeout=10)
        assert dep["prefixes"][0]["preferredLifetime"] == 0
        r.wait_for(lambda m: states(m).get(A) == "withdrawn", timeout=10)
        r.wait_for(lambda m: m["prefixes"] == [], timeout=10)
        assert time.monotonic() - t0 < 12
    finally:
        r.stop()


def test_rogue_and_malformed_ras_are_ignored_and_counted(lab: Lab, tmp_path: Path) -> None:
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", config(lab, netlink=False))
    try:
        r.wait_for(lambda m: current(m) == A)
        rogue = ra.RouterAdvertisement(
            options=(ra.PrefixInformation(ra.IPv6Network("2001:db8:666::/64"), 86400, 86400),)
        ).pack()
        lab.inject_ra(rogue, hop_limit=64)
        lab.add_address(lab.router, lab.router_if, "2001:db8:ffff::1/64")
        lab.inject_ra(rogue, source="2001:db8:ffff::1")
        lab.inject_ra(rogue[:20])
        lab.inject_ra(rogue[:17] + b"\x00" + rogue[18:])
        r.wait_log("zero-length-option")
        for reason in ("hop-limit", "source-not-link-local", "truncated"):
            assert reason in r.log()
        assert r.lines.empty() or all("2001:db8:666::/64" not in json.dumps(m) for m in list(r.lines.queue))
        assert r.proc.poll() is None
    finally:
        r.stop()


def test_a_prefix_option_of_the_wrong_length_is_skipped_and_counted(lab: Lab, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl.sock"
    r = Routerd(lab, tmp_path / "r", config(lab, netlink=False, control=ctl))
    try:
        r.wait_for(lambda m: m["prefixes"] == [])  # listening, and nothing heard yet
        good = ra.PrefixInformation(ra.IPv6Network(A), 3600, 1800)
        short = ra.RawOption(ra.PrefixInformation.TYPE, good.body()[:22])  # 24 bytes, not 32
        lab.inject_ra(ra.RouterAdvertisement(options=(short, good)).pack())
        r.wait_for(lambda m: current(m) == A)
        status = control_request(ctl, {"op": "status"})
        assert (status["rejected"], status["ras_accepted"]) == ({"bad-pio-length": 1}, 1)
    finally:
        r.stop()


def entry(msg: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The prefix's entry in a message; empty when it is not listed."""
    return next((p for p in msg["prefixes"] if p["prefix"] == prefix), {})


def test_pio_flags_decide_what_is_published(lab: Lab, tmp_path: Path) -> None:
    """A=1: a SLAAC prefix. L only: on-link, lifetimes as given (RFC 4861 §6.3.4). Neither: not listed."""
    lab.sysctl(lab.host, f"net.ipv6.conf.{lab.host_if}.accept_ra", 2)  # the kernel reports them too
    ctl = tmp_path / "ctl.sock"
    on_link, neither = "2001:db8:b::/64", "2001:db8:c::/64"
    lab.start_radvd([
        AdvPrefix(neither, valid=3600, preferred=1800, on_link=False, autonomous=False),
        AdvPrefix(A, valid=3600, preferred=1800),
        AdvPrefix(on_link, valid=3600, preferred=1800, autonomous=False),
    ])  # fmt: skip
    r = Routerd(lab, tmp_path / "r", config(lab, control=ctl))
    try:
        msg = r.wait_for(lambda m: {"ra", "kernel-ra"} <= set(entry(m, on_link).get("sources", ())))
        assert states(msg) == {A: "preferred", on_link: "preferred"}

        def refused() -> int:
            return int(
                control_request(ctl, {"op": "status"})["rejected"].get("neither-on-link-nor-autonomous", 0)
            )

        wait_until(lambda: refused() >= 2, what="the PIO without L and A refused by both paths")
        assert all(neither not in states(m) for m in list(r.lines.queue))

        # Deprecating it publishes at once (lifetime changes alone wait for the heartbeat).
        lab.advertise([AdvPrefix(A, valid=3600, preferred=1800),
                       AdvPrefix(on_link, valid=60, preferred=0, autonomous=False)])  # fmt: skip
        msg = r.wait_for(lambda m: states(m).get(on_link) == "deprecated")
        assert entry(msg, on_link)["validLifetime"] <= 60
        lab.advertise([AdvPrefix(A, valid=3600, preferred=1800),
                       AdvPrefix(on_link, valid=0, preferred=0, autonomous=False)])  # fmt: skip
        msg = r.wait_for(lambda m: states(m).get(on_link) == "withdrawn")
        assert entry(msg, on_link)["validLifetime"] == 0 and current(msg) == A
    finally:
        r.stop()


def test_allowlist_keeps_out_a_second_router(lab: Lab, tmp_path: Path) -> None:
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    extra = f'allowed_routers = ["{lab.router_ll}"]'
    r = Routerd(lab, tmp_path / "r", config(lab, extra, netlink=False))
    try:
        r.wait_for(lambda m: current(m) == A)
        lab.add_address(lab.router, lab.router_if, "fe80::bad/64")
        adv = ra.RouterAdvertisement(
            preference=ra.RouterPreference.HIGH,
            options=(ra.PrefixInformation(ra.IPv6Network("2001:db8:666::/64"), 86400, 86400),),
        )
        lab.inject_ra(adv.pack(), source="fe80::bad")
        r.wait_log("router-not-allowed")
    finally:
        r.stop()


def test_no_config_in_a_lab_namespace_prints_a_json_state_line(lab: Lab, tmp_path: Path) -> None:
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    from tests.ground.netlab import run

    run(["ip", "-6", "route", "add", "default", "via", lab.router_ll, "dev", lab.host_if], lab.host)
    r = Routerd(lab, tmp_path / "r")  # no --config, no arguments: the embedded default
    try:
        msg = r.wait_for(lambda m: current(m) == A)
        assert msg["interface"] == lab.host_if
        assert "watching the default-route interface" in r.log()
    finally:
        r.stop()


def test_sighup_reloads_and_a_bad_config_keeps_the_old_one(lab: Lab, tmp_path: Path) -> None:
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", config(lab, netlink=False))
    try:
        first = r.wait_for(lambda m: current(m) == A)
        r.config_path.write_text("router_id = 'edge'\n[[interface]]\nnam = 'x'\n")
        r.signal(signal.SIGHUP)
        r.wait_log("keeping the running configuration")
        assert "interface.0.nam: unknown key" in r.log()
        r.config_path.write_text(
            config(lab, netlink=False).replace('router_id = "edge"', 'router_id = "edge2"')
        )
        r.signal(signal.SIGHUP)
        again = r.wait_for(lambda m: m["router"] == "edge2" and current(m) == A)
        assert again["sequence"] > first["sequence"] and again["boot"] == first["boot"]
    finally:
        r.stop()
