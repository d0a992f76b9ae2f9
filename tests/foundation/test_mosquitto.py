"""The MQTT broker is a real Mosquitto: retained messages, auth, ACL and TLS."""

from __future__ import annotations

import ssl

import pytest

from tests.ground.mosquitto import USERS, Mosquitto
from tests.ground.mqttclient import Subscriber, publish

pytestmark = pytest.mark.mqtt


def test_retained_message_reaches_a_late_subscriber(mosquitto: Mosquitto, mqtt_base: str) -> None:
    publish(mosquitto.plain_port, f"{mqtt_base}/r/eth0/state", b'{"x":1}', retain=True)
    with Subscriber(mosquitto.plain_port, f"{mqtt_base}/#") as sub:
        msg = sub.wait_for()
    assert msg.retain and msg.payload == b'{"x":1}'
    publish(mosquitto.plain_port, f"{mqtt_base}/r/eth0/state", b"", retain=True)  # delete it
    with Subscriber(mosquitto.plain_port, f"{mqtt_base}/#") as sub:
        assert sub.drain() == []


def test_auth_listener_rejects_a_wrong_password(mosquitto: Mosquitto, mqtt_base: str) -> None:
    with pytest.raises(ConnectionError):
        Subscriber(mosquitto.auth_port, f"{mqtt_base}/#", username="clusterd", password="wrong")


def test_acl_drops_a_publish_from_a_forbidden_client(mosquitto: Mosquitto, mqtt_base: str) -> None:
    topic = f"{mqtt_base}/r/eth0/state"
    with Subscriber(
        mosquitto.auth_port, f"{mqtt_base}/#", username="clusterd", password=USERS["clusterd"]
    ) as sub:
        publish(mosquitto.auth_port, topic, b"forged", username="intruder", password=USERS["intruder"])
        publish(mosquitto.auth_port, topic, b"genuine", username="routerd", password=USERS["routerd"])
        got = [m.payload for m in sub.drain(settle=0.5)]
    assert got == [b"genuine"]


def test_tls_listener_verifies_with_the_test_ca(mosquitto: Mosquitto, mqtt_base: str) -> None:
    with Subscriber(
        mosquitto.tls_port,
        f"{mqtt_base}/#",
        username="clusterd",
        password=USERS["clusterd"],
        ca_file=str(mosquitto.ca_file),
    ) as sub:
        assert sub.drain(settle=0.1) == []
    with pytest.raises(ssl.SSLError):  # the system trust store does not know the test CA
        Subscriber(
            mosquitto.tls_port,
            f"{mqtt_base}/#",
            username="clusterd",
            password=USERS["clusterd"],
            ca_file=ssl.get_default_verify_paths().cafile,
        )
