"""routerd's MQTT and webhook sinks against real peers, through faults.

The broker is stopped during a prefix change and restarted: the newest state
arrives. A local HTTPS server checks the HMAC signature and answers 500, then
200: routerd retries until acknowledged.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme

from routerd.core.wire import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.ground.mosquitto import USERS, Mosquitto
from tests.ground.mqttclient import Subscriber
from tests.ground.netlab import AdvPrefix, Lab
from tests.ground.ports import free_port
from tests.ground.routerd_proc import Routerd, current
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.lab

A, B, C = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64"


def test_broker_down_during_a_change_then_back_the_newest_state_arrives(
    lab: Lab, mosquitto: Mosquitto, mqtt_base: str, tmp_path: Path
) -> None:
    lab.forward(mosquitto.plain_port)
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", f"""
router_id = "edge"
[stdout]
enabled = true
[publish]
hold_down = 0.2
[[interface]]
name = "{lab.host_if}"
netlink = false
[mqtt]
host = "127.0.0.1"
port = {mosquitto.plain_port}
tls = false
base_topic = "{mqtt_base}"
""")  # fmt: skip
    topic = f"{mqtt_base}/edge/{lab.host_if}/state"
    try:
        r.wait_for(lambda m: current(m) == A)
        with Subscriber(mosquitto.plain_port, topic) as sub:
            sub.wait_for(lambda m: json.loads(m.payload)["prefixes"][0]["prefix"] == A)
        mosquitto.stop()
        lab.advertise([AdvPrefix(A, valid=0, preferred=0), AdvPrefix(B, valid=3600, preferred=1800)])
        r.wait_for(lambda m: current(m) == B)
        lab.advertise([AdvPrefix(B, valid=0, preferred=0), AdvPrefix(C, valid=3600, preferred=1800)])
        newest = r.wait_for(lambda m: current(m) == C)
        mosquitto.start()  # no persistence: the broker lost every retained message
        with Subscriber(mosquitto.plain_port, topic) as sub:
            got = sub.wait_for(lambda m: json.loads(m.payload)["sequence"] == newest["sequence"], timeout=90)
            assert json.loads(got.payload)["prefixes"][0]["prefix"] == C
            later = [json.loads(m.payload)["sequence"] for m in sub.drain(1.0)]
            assert all(s >= newest["sequence"] for s in later), "a stale state was published after the newest"
    finally:
        r.stop()


class _Hook(http.server.BaseHTTPRequestHandler):
    secret: ClassVar[bytes] = b""
    answers: ClassVar[list[int]] = []
    received: ClassVar[list[dict[str, Any]]] = []
    verified: ClassVar[list[bool]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ts = self.headers[TIMESTAMP_HEADER]
        mac = hmac.new(self.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        self.verified.append(hmac.compare_digest("sha256=" + mac, self.headers[SIGNATURE_HEADER]))
        code = self.answers.pop(0) if self.answers else 200
        self.received.append({"code": code, "body": json.loads(body)})
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok" if code == 200 else b"try later")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def https_hook(tmp_path: Path) -> Iterator[tuple[int, Path, type[_Hook]]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = type(
        "Hook", (_Hook,), {"secret": b"s3cret-key", "answers": [500], "received": [], "verified": []}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], ca_file, handler
    server.shutdown()


def test_webhook_is_signed_retried_after_500_and_verifies_tls(
    lab: Lab, tmp_path: Path, https_hook: tuple[int, Path, type[_Hook]]
) -> None:
    port, ca_file, hook = https_hook
    lab.forward(port)
    secret = tmp_path / "secret"
    secret.write_text("s3cret-key\n")
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", f"""
router_id = "edge"
[stdout]
enabled = true
[[interface]]
name = "{lab.host_if}"
netlink = false
[[webhook]]
url = "https://127.0.0.1:{port}/prefix"
secret_file = "{secret}"
ca_file = "{ca_file}"
""")  # fmt: skip
    try:
        msg = r.wait_for(lambda m: current(m) == A)
        r.wait_log("webhook answered HTTP 500; will retry")
        acked = wait_until(lambda: [x for x in hook.received if x["code"] == 200], what="a 200 from the hook")
        assert [x["code"] for x in hook.received] == [500, 200]
        assert hook.verified == [True, True], "each attempt carries a valid signature"
        assert acked[0]["body"]["sequence"] == msg["sequence"]
        assert "s3cret" not in r.log()
    finally:
        r.stop()


def test_webhook_refuses_an_unknown_ca(
    lab: Lab, tmp_path: Path, https_hook: tuple[int, Path, type[_Hook]]
) -> None:
    port, _ca_file, hook = https_hook
    lab.forward(port)
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", f"""
[stdout]
enabled = true
[[interface]]
name = "{lab.host_if}"
netlink = false
[[webhook]]
url = "https://127.0.0.1:{port}/prefix"
secret_env = "HOOK_SECRET"
""", env={"HOOK_SECRET": "s3cret-key"})  # fmt: skip
    try:
        r.wait_for(lambda m: current(m) == A)
        r.wait_log("CERTIFICATE_VERIFY_FAILED")
        assert hook.received == []
    finally:
        r.stop()


def test_mqtt_over_tls_with_a_password_and_mqtt5_expiry(
    lab: Lab, mosquitto: Mosquitto, mqtt_base: str, tmp_path: Path
) -> None:
    lab.forward(mosquitto.tls_port)
    password = tmp_path / "mqtt.pass"
    password.write_text(USERS["routerd"] + "\n")
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", f"""
router_id = "edge"
[stdout]
enabled = true
[[interface]]
name = "{lab.host_if}"
netlink = false
[mqtt]
host = "127.0.0.1"
port = {mosquitto.tls_port}
ca_file = "{mosquitto.ca_file}"
username = "routerd"
password_file = "{password}"
base_topic = "{mqtt_base}"
""")  # fmt: skip
    topic = f"{mqtt_base}/edge/{lab.host_if}/state"
    try:
        msg = r.wait_for(lambda m: current(m) == A)
        with Subscriber(mosquitto.tls_port, topic, username="clusterd", password=USERS["clusterd"],
                        ca_file=str(mosquitto.ca_file), v5=True) as sub:  # fmt: skip
            got = sub.wait_for(lambda m: json.loads(m.payload)["sequence"] == msg["sequence"])
        assert got.expiry is not None and 3500 < got.expiry <= 3600  # follows the valid lifetime
        assert USERS["routerd"] not in r.log()
    finally:
        r.stop()


def test_a_wrong_mqtt_password_is_reported_not_fatal(
    lab: Lab, mosquitto: Mosquitto, mqtt_base: str, tmp_path: Path
) -> None:
    lab.forward(mosquitto.auth_port)
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", f"""
[stdout]
enabled = true
[[interface]]
name = "{lab.host_if}"
netlink = false
[mqtt]
host = "127.0.0.1"
port = {mosquitto.auth_port}
tls = false
username = "routerd"
password_env = "MQTT_PASSWORD"
base_topic = "{mqtt_base}"
""", env={"MQTT_PASSWORD": "wrong"})  # fmt: skip
    try:
        r.wait_for(lambda m: current(m) == A)  # stdout keeps working
        r.wait_log("MQTT broker refused the connection")
        assert r.proc.poll() is None
    finally:
        r.stop()
