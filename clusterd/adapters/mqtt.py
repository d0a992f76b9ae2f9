"""The MQTT receiver: routerd's retained state for every router, handed to the controller.

Subscribes to ``<base>/+/+/state`` (a retained message gives the state of
every router at once on connect). Each payload is decoded with routerd's wire
model; garbage is logged (rate-limited) and counted, never applied. The topic
must agree with the payload's router and interface, so a client allowed to
publish on one router's topic cannot speak for another.

It speaks MQTT 5 where the broker does (else 3.1.1): a retained message then
comes with what is left of its Message Expiry Interval, which tells its age
(clusterd.core.status.published_at).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from clusterd.clock import utcnow
from clusterd.config import MQTTSection
from clusterd.core.status import Report
from clusterd.metrics import Metrics
from routerd.adapters.mqttclient import UNSUPPORTED_PROTOCOL, make_client, reason_code
from routerd.core.wire import WireError, decode
from routerd.logs import RateLimited, kv
from routerd.settings import tls_context

LOG = logging.getLogger("clusterd.mqtt")


class MQTTReceiver:
    def __init__(
        self,
        cfg: MQTTSection,
        client_id: str,
        password: str | None,
        submit: Callable[[Report], object],
        metrics: Metrics,
    ) -> None:
        self.cfg = cfg
        self.topic = f"{cfg.base_topic.rstrip('/')}/+/+/state"
        self._submit = submit
        self.metrics = metrics
        self._limited = RateLimited(LOG)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = threading.Event()
        self._client_id = client_id
        self._password = password
        self._tls = tls_context(cfg.ca_file, "mqtt.caFile") if cfg.tls else None
        self.v5 = True
        self.client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        c = make_client(
            self._client_id, v5=self.v5, username=self.cfg.username, password=self._password,
            tls=self._tls,
        )  # fmt: skip
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_connect_fail = self._on_connect_fail
        return c

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect()

    def _connect(self) -> None:
        LOG.info(
            "subscribing to routerd's state", extra=kv(host=self.cfg.host, topic=self.topic, mqtt5=self.v5)
        )
        self.client.connect_async(self.cfg.host, self.cfg.effective_port, keepalive=self.cfg.keepalive)
        self.client.loop_start()

    async def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _fall_back(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.v5 = False
        self.client = self._new_client()
        self._connect()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        if reason_code(rc) in UNSUPPORTED_PROTOCOL and self.v5 and self._loop is not None:
            LOG.info("broker does not speak MQTT 5: falling back to 3.1.1 (a retained message's age then "
                     "comes from its observedAt)")  # fmt: skip
            self._loop.call_soon_threadsafe(self._fall_back)
            return
        if reason_code(rc) != 0:
            LOG.error(
                "MQTT broker refused clusterd: check credentials and the ACL", extra=kv(code=reason_code(rc))
            )
            return
        client.subscribe(self.topic, qos=1)
        self.connected.set()
        LOG.info("connected to MQTT broker", extra=kv(host=self.cfg.host))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._limited.warning(
            "mqtt-unreachable", "cannot reach the MQTT broker; retrying", host=self.cfg.host
        )

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, *args: Any) -> None:
        if self.connected.is_set():
            LOG.warning("lost the MQTT broker; reconnecting", extra=kv(host=self.cfg.host))
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received = utcnow()
        parts = msg.topic.split("/")
        if not msg.payload:
            return  # an emptied retained message: the state was deleted, nothing to apply
        try:
            state = decode(bytes(msg.payload))
        except WireError as e:
            self.metrics.messages.labels("mqtt", "invalid").inc()
            self._limited.warning("bad-message", f"ignored an MQTT message: {e}", topic=msg.topic)
            return
        if parts[-3:-1] != [state.router, state.interface]:
            self.metrics.messages.labels("mqtt", "topic-mismatch").inc()
            self._limited.warning(
                "topic-mismatch",
                f"ignored a message for {state.router}/{state.interface} published on {msg.topic}",
                topic=msg.topic,
            )
            return
        self.metrics.messages.labels("mqtt", "received").inc()
        # The retain flag is set only on a message the broker kept and hands over on subscribing.
        props = getattr(msg, "properties", None)
        expiry = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        report = Report(kind="routerd", transport="mqtt", state=state, received_at=received,
                        retained=bool(msg.retain), expiry_interval=expiry)  # fmt: skip
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._submit, report)
