"""Home Assistant MQTT discovery (``[mqtt] homeassistant_discovery``) against the real Mosquitto.

routerd watches ``lo`` (``QUIET_LO``) and announces the interface when it publishes its state.
The test plays Home Assistant: it reads the retained discovery config, checks it points at the
unchanged state topic, and renders its ``value_template`` with Jinja2, Home Assistant's engine.
"""

from __future__ import annotations

import json
import os
from itertools import count
from pathlib import Path

import jinja2.sandbox
import pytest

from routerd.adapters.mqtt import HA_CURRENT_PREFIX
from tests.ground.mosquitto import Mosquitto
from tests.ground.mqttclient import Subscriber, publish
from tests.ground.routerd_proc import QUIET_LO, Routerd

pytestmark = pytest.mark.mqtt
_runs = count()


def _config(port: int, base: str, router: str, discovery: str) -> str:
    return f"""router_id = "{router}"
{QUIET_LO}[mqtt]
host = "127.0.0.1"
port = {port}
tls = false
base_topic = "{base}"
{discovery}
"""


def _run(tmp_path: Path, mosquitto: Mosquitto, base: str, router: str, discovery: str) -> Routerd:
    return Routerd(None, tmp_path / f"r{next(_runs)}", _config(mosquitto.plain_port, base, router, discovery))


def test_discovery_announces_a_sensor_reading_the_state_topic_and_false_removes_it(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_base: str
) -> None:
    router = f"edge.t{os.getpid()}"  # a dot, which an object id may not hold
    object_id = f"dynamic_prefix_edge_t{os.getpid()}_lo"
    topic = f"homeassistant/sensor/{object_id}/config"
    state_topic = f"{mqtt_base}/{router}/lo/state"

    r = _run(tmp_path, mosquitto, mqtt_base, router, "homeassistant_discovery = true")
    try:
        with Subscriber(mosquitto.plain_port, state_topic) as sub:
            state = sub.wait_for()  # the discovery config went out before it, on the same connection
        with Subscriber(mosquitto.plain_port, topic) as sub:
            announced = sub.wait_for()
    finally:
        r.stop()
    assert announced.retain and announced.qos == 1
    config = json.loads(announced.payload)
    assert config["state_topic"] == config["json_attributes_topic"] == state_topic
    assert config["availability_topic"] == f"{mqtt_base}/{router}/availability"
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    assert config["unique_id"] == object_id and config["name"] == "IPv6 prefix lo"
    assert config["device"]["identifiers"] == [f"dynamic_prefix_edge_t{os.getpid()}"]
    assert config["value_template"] == HA_CURRENT_PREFIX
    # The state message is the wire contract's, untouched: the template reads it as it is.
    assert json.loads(state.payload)["interface"] == "lo"

    with Subscriber(mosquitto.plain_port, topic) as live:
        live.wait_for(lambda m: m.payload != b"")  # still retained after routerd stopped
        r = _run(tmp_path, mosquitto, mqtt_base, router, "homeassistant_discovery = false")
        try:
            live.wait_for(lambda m: m.payload == b"", timeout=20)
        finally:
            r.stop()
    # Nothing retained any more: a new subscriber's first message is one published after it subscribed.
    with Subscriber(mosquitto.plain_port, topic) as fresh:
        publish(mosquitto.plain_port, topic, b"marker", retain=False)
        assert fresh.wait_for().payload == b"marker"


def test_unset_leaves_the_discovery_topic_alone(tmp_path: Path, mosquitto: Mosquitto, mqtt_base: str) -> None:
    router = f"quiet-t{os.getpid()}"
    topic = f"homeassistant/sensor/dynamic_prefix_{router}_lo/config"
    publish(mosquitto.plain_port, topic, b'{"name": "kept"}', retain=True)
    r = _run(tmp_path, mosquitto, mqtt_base, router, "")
    try:
        with Subscriber(mosquitto.plain_port, f"{mqtt_base}/{router}/lo/state") as sub:
            sub.wait_for()  # routerd has published its state
        with Subscriber(mosquitto.plain_port, topic) as sub:
            assert sub.wait_for().payload == b'{"name": "kept"}'
    finally:
        r.stop()
        publish(mosquitto.plain_port, topic, b"", retain=True)


def test_the_value_template_picks_the_first_preferred_prefix() -> None:
    # Home Assistant renders in a sandbox without autoescape.
    template = jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(HA_CURRENT_PREFIX)
    msg = {"prefixes": [{"prefix": "2001:db8:1::/64", "state": "deprecated"},
                        {"prefix": "2001:db8:2::/64", "state": "preferred"}]}  # fmt: skip
    assert template.render(value_json=msg) == "2001:db8:2::/64"
    assert template.render(value_json={"prefixes": []}) == "none"
