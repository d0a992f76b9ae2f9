"""The MQTT sink (paho-mqtt 1.6 and 2.x).

Topics: ``<base>/<router>/<interface>/state`` (retained, QoS 1) and
``<base>/<router>/availability`` (``online``/``offline``, retained, with a
Last Will of ``offline``). Over MQTT 5 the state carries a Message Expiry
Interval equal to its longest valid lifetime, so a router that vanishes does
not leave a dead prefix retained forever.

While disconnected, only the newest state of each interface is kept and it is
published on reconnect. paho re-sends an unacknowledged older message before
anything published later, so the broker never ends on a stale state; and each
message carries its sequence for consumers to check.

With ``homeassistant_discovery`` routerd also announces each interface to Home
Assistant's MQTT discovery (``homeassistant/sensor/<id>/config``, retained): a
sensor whose ``value_template`` reads the first preferred prefix from the state
message above, which stays as it is. ``false`` empties those retained configs,
so Home Assistant removes the sensors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from routerd import __version__
from routerd.adapters.delivery import Delivery, explain
from routerd.adapters.mqttclient import UNSUPPORTED_PROTOCOL, make_client, reason_code
from routerd.config import MQTTSection
from routerd.core.wire import PrefixState
from routerd.logs import RateLimited, kv
from routerd.settings import tls_context

LOG = logging.getLogger("routerd.mqtt")


def expiry(msg: PrefixState) -> int | None:
    """Seconds until the longest valid lifetime runs out; None when one is infinite or none are left."""
    lifetimes = [p.valid_lifetime for p in msg.prefixes]
    if not lifetimes or any(v is None for v in lifetimes):
        return None
    longest = max(v for v in lifetimes if v is not None)
    return longest or None


HA_DISCOVERY_PREFIX = "homeassistant"
"""Home Assistant's default discovery prefix."""
HA_CURRENT_PREFIX = (
    "{% set p = value_json.prefixes | selectattr('state', 'eq', 'preferred') | list %}"
    "{{ p[0].prefix if p else 'none' }}"
)
"""The first preferred prefix of a state message (wire-protocol.md, rule 5), or 'none'."""


def homeassistant_discovery(router_id: str, interface: str, state_topic: str, availability_topic: str
                            ) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The discovery topic and config of the sensor showing ``interface``'s current prefix."""
    object_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"dynamic_prefix_{router_id}_{interface}")
    config = {
        "name": f"IPv6 prefix {interface}",
        "unique_id": object_id,
        "icon": "mdi:ip-network",
        "state_topic": state_topic,
        "value_template": HA_CURRENT_PREFIX,
        "json_attributes_topic": state_topic,
        "availability_topic": availability_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [re.sub(r"[^A-Za-z0-9_-]", "_", f"dynamic_prefix_{router_id}")],
            "name": f"routerd {router_id}",
            "manufacturer": "dynamic-prefix",
            "model": "routerd",
            "sw_version": __version__,
        },
    }
    return f"{HA_DISCOVERY_PREFIX}/sensor/{object_id}/config", config


def url(cfg: MQTTSection) -> str:
    """``mqtts://host:port`` (or ``mqtt://`` without TLS), for logs and ``routerd status``."""
    return f"mqtt{'s' if cfg.tls else ''}://{cfg.host}:{cfg.effective_port}"


class MQTTSink:
    """Publishes each state retained at QoS 1; a state counts as delivered when the broker acknowledges it."""

    name = "mqtt"

    def __init__(self, cfg: MQTTSection, router_id: str, password: str | None) -> None:
        self.cfg = cfg
        self.router_id = router_id
        self._password = password
        self._tls = tls_context(cfg.ca_file, "mqtt.ca_file") if cfg.tls else None
        self.base = f"{cfg.base_topic.rstrip('/')}/{router_id}"
        self.availability_topic = f"{self.base}/availability"
        self._v5 = cfg.protocol in ("auto", "5")
        self._lock = threading.Lock()
        self._latest: dict[str, PrefixState] = {}
        self._acked: dict[str, int] = {}
        """topic -> the newest sequence the broker acknowledged."""
        self._inflight: dict[int, tuple[str, int] | None] = {}
        """message id -> (topic, sequence) of a state, (topic, -1) of a discovery config, or None for an
        availability message."""
        self._early: set[int] = set()
        """Acknowledgements that arrived before publish() returned their message id."""
        self._announced: set[str] = set()
        """Interfaces whose Home Assistant discovery config went out on this connection."""
        self._connected = False
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limited = RateLimited(LOG)
        self.delivery = Delivery(url(cfg), connected=False)

    def state_topic(self, interface: str) -> str:
        return f"{self.base}/{interface}/state"

    # -- life cycle ----------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        c = make_client(
            self.cfg.client_id or f"routerd-{self.router_id}",
            v5=self._v5,
            username=self.cfg.username,
            password=self._password,
            tls=self._tls,
        )
        c.will_set(self.availability_topic, "offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_publish = self._on_publish
        return c

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start_client()

    def _start_client(self) -> None:
        with self._lock:  # message ids are per client; paho re-sends in-flight ones after a reconnect
            self._inflight.clear()
            self._early.clear()
        self._client = self._new_client()
        LOG.info(
            "connecting to MQTT broker",
            extra=kv(host=self.cfg.host, port=self.cfg.effective_port, tls=self.cfg.tls, mqtt5=self._v5),
        )
        # connect_async + loop_start: the paho thread keeps retrying with backoff
        # if the broker is down now, instead of failing routerd's start.
        self._client.connect_async(self.cfg.host, self.cfg.effective_port, keepalive=self.cfg.keepalive)
        self._client.loop_start()

    async def stop(self) -> None:
        """Publish ``offline`` (our own, not the Will) and disconnect."""
        client = self._client
        if client is None:
            return
        with self._lock:
            connected = self._connected
        if connected:
            info = self._publish(client, self.availability_topic, "offline", None)
            await asyncio.get_running_loop().run_in_executor(None, info.wait_for_publish, 5.0)
        client.disconnect()
        client.loop_stop()
        self._client = None

    # -- publishing -------------------------------------------------------------------------

    def publish(self, msg: PrefixState) -> None:
        topic = self.state_topic(msg.interface)
        with self._lock:
            self._latest[topic] = msg
            if not self._connected:
                LOG.debug("broker unreachable: keeping the newest state", extra=kv(topic=topic))
                return
        assert self._client is not None
        self._announce(self._client, msg.interface)
        self._send(topic, msg)

    def queued(self) -> int:
        """Interfaces whose newest state the broker has not acknowledged yet."""
        with self._lock:
            return sum(self._acked.get(t, -1) < m.sequence for t, m in self._latest.items())

    def _send(self, topic: str, msg: PrefixState) -> None:
        assert self._client is not None
        props = None
        seconds = expiry(msg)
        if self._v5 and seconds is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call,unused-ignore]
            props.MessageExpiryInterval = seconds
        self._publish(self._client, topic, msg.to_json(), (topic, msg.sequence), props)

    def _announce(self, client: mqtt.Client, interface: str) -> None:
        """Home Assistant's discovery config for ``interface`` (or, set to false, its removal), once
        per connection; left alone when ``homeassistant_discovery`` is unset."""
        wanted = self.cfg.homeassistant_discovery
        if wanted is None:
            return
        with self._lock:
            if interface in self._announced:
                return
            self._announced.add(interface)
        topic, config = homeassistant_discovery(
            self.router_id, interface, self.state_topic(interface), self.availability_topic
        )
        # An empty retained payload deletes the retained config; Home Assistant then removes the sensor.
        self._publish(client, topic, json.dumps(config) if wanted else "", (topic, -1))

    def _publish(
        self, client: mqtt.Client, topic: str, payload: str | bytes, state: tuple[str, int] | None,
        props: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:  # fmt: skip
        """Publish retained at QoS 1 and remember what the acknowledgement will confirm.

        paho may run ``on_publish`` before ``publish()`` returns the id, and it holds its own
        lock while it does, so the id is matched after the call, never under our lock during it.
        """
        info = client.publish(topic, payload, qos=1, retain=True, properties=props)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self._acknowledged(state)
            else:
                self._inflight[info.mid] = state
        return info

    def _acknowledged(self, state: tuple[str, int] | None) -> None:
        """Called with the lock held."""
        if state is not None:
            topic, sequence = state
            self._acked[topic] = max(sequence, self._acked.get(topic, -1))
        self.delivery.succeeded()

    # -- paho callbacks (paho's thread) -------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        code = reason_code(rc)
        if code != 0:
            if code in UNSUPPORTED_PROTOCOL and self._v5 and self.cfg.protocol == "auto":
                LOG.info("broker does not speak MQTT 5: falling back to 3.1.1")
                self._v5 = False
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self._restart)
                return
            self.delivery.failed(f"the broker refused the connection ({rc}): check the credentials")
            LOG.error(
                "MQTT broker refused the connection: check host, credentials and the ACL",
                extra=kv(code=code, reason=str(rc)),
            )
            return
        LOG.info("connected to MQTT broker", extra=kv(host=self.cfg.host))
        self._publish(client, self.availability_topic, "online", None)
        with self._lock:
            self._connected = True
            self.delivery.connected = True
            self._announced.clear()
            interfaces = [m.interface for m in self._latest.values()]
            pending = [(t, m) for t, m in self._latest.items() if self._acked.get(t, -1) < m.sequence]
        for interface in interfaces:
            self._announce(client, interface)
        for topic, msg in pending:
            self._send(topic, msg)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        reason = rest[0] if rest else None  # paho 2.x: the PUBACK's reason code (MQTT 5)
        with self._lock:
            if mid not in self._inflight:
                self._early.add(mid)
                return
            state = self._inflight.pop(mid)
            if reason is not None and getattr(reason, "is_failure", False):
                topic = state[0] if state else self.availability_topic
                self.delivery.failed(f"the broker refused the message on {topic} ({reason}): check its ACL")
                return
            self._acknowledged(state)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from the handler of the connection's exception: name the cause.
        exc = sys.exc_info()[1]
        why = (
            explain(exc, self.cfg.host, self.cfg.effective_port, ca_file=self.cfg.ca_file, setting="mqtt")
            if exc is not None
            else f"cannot connect to {self.delivery.target}"
        )
        self.delivery.failed(why)
        self._limited.warning("mqtt-unreachable", f"MQTT broker: {why}; retrying", host=self.cfg.host,
                              port=self.cfg.effective_port)  # fmt: skip

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, *args: Any) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
            self.delivery.connected = False
        if was:
            self.delivery.failed(f"lost the connection to {self.delivery.target}")
            LOG.warning("lost the MQTT broker; reconnecting with backoff", extra=kv(host=self.cfg.host))

    def _restart(self) -> None:
        old = self._client
        if old is not None:
            old.disconnect()
            old.loop_stop()
        self._start_client()
