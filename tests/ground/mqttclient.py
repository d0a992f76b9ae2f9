"""A small MQTT client for tests: subscribe, collect, wait; publish.

Works with paho-mqtt 1.6 (OpenWrt's feed) and 2.x, because routerd's tests run
under both.
"""

from __future__ import annotations

import queue
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

PAHO2 = hasattr(mqtt, "CallbackAPIVersion")


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float = 0.0
    """time.monotonic() when paho handed it over (latency benchmarks)."""
    expiry: int | None = None
    """MQTT 5 Message Expiry Interval, as the broker delivered it."""


def new_client(client_id: str = "", v5: bool = False) -> mqtt.Client:
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    if PAHO2:
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
    return mqtt.Client(client_id=client_id, protocol=proto)


class Subscriber:
    """Connects, subscribes to ``topic`` and queues every message it receives."""

    def __init__(
        self,
        port: int,
        topic: str,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        v5: bool = False,
    ) -> None:
        self.messages: queue.Queue[Received] = queue.Queue()
        self.history: list[Received] = []
        self._connected = queue.Queue[Any]()
        self.client = new_client(v5=v5)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self._topic = topic
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        rc = self._connected.get(timeout=10)
        if rc != "subscribed":
            raise ConnectionError(f"MQTT connect/subscribe failed: {rc}")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        if int(getattr(rc, "value", rc)) != 0:
            self._connected.put(rc)
            return
        client.subscribe(self._topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        self._connected.put("subscribed")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        expiry = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        self.messages.put(
            Received(msg.topic, bytes(msg.payload), bool(msg.retain), int(msg.qos), time.monotonic(), expiry)
        )

    def wait_for(
        self, predicate: Callable[[Received], bool] = lambda m: True, timeout: float = 10.0
    ) -> Received:
        """Return the first message received so far (or later) that satisfies ``predicate``."""
        for msg in self.history:
            if predicate(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching MQTT message on {self._topic} within {timeout}s")
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            self.history.append(msg)
            if predicate(msg):
                return msg

    def drain(self, settle: float = 0.3) -> list[Received]:
        """Everything received until nothing arrives for ``settle`` seconds."""
        out = []
        while True:
            try:
                msg = self.messages.get(timeout=settle)
            except queue.Empty:
                return out
            self.history.append(msg)
            out.append(msg)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish(
    port: int,
    topic: str,
    payload: bytes | str,
    *,
    retain: bool = False,
    qos: int = 1,
    username: str | None = None,
    password: str | None = None,
    expiry: int | None = None,
) -> None:
    """Publish one message and wait until the broker has it (QoS 1 acknowledged).

    ``expiry`` publishes over MQTT 5 with that Message Expiry Interval.
    """
    client = new_client(v5=expiry is not None)
    if username:
        client.username_pw_set(username, password)
    props = None
    if expiry is not None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call,unused-ignore]
        props.MessageExpiryInterval = expiry
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
