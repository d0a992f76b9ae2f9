"""The paho client both programs build: paho-mqtt 1.6 and 2.x, credentials, verified TLS.

routerd's sink and clusterd's subscriber share it (an import-linter contract in
pyproject.toml names it among the routerd modules clusterd may import).
"""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as mqtt

PAHO2 = hasattr(mqtt, "CallbackAPIVersion")
UNSUPPORTED_PROTOCOL = {1, 132}  # MQTT 3.1.1 CONNACK code 1; MQTT 5 reason code 0x84


def reason_code(rc: Any) -> int:
    """A CONNACK result as a number: paho 2.x passes a ReasonCode, 1.6 an int."""
    return int(getattr(rc, "value", rc))


def make_client(
    client_id: str, *, v5: bool, username: str | None, password: str | None, tls: ssl.SSLContext | None
) -> mqtt.Client:
    """A paho client (1.6 or 2.x) with credentials and verified TLS (``tls``: from
    :func:`routerd.settings.tls_context`)."""
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    if PAHO2:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)  # type: ignore[attr-defined,unused-ignore]
    else:
        c = mqtt.Client(client_id=client_id, protocol=proto)
    if username:
        c.username_pw_set(username, password)
    if tls is not None:
        c.tls_set_context(tls)
    c.reconnect_delay_set(min_delay=1, max_delay=60)
    return c
