"""What routerd says about its sinks: which are on at start, why the MQTT broker cannot be reached
(against the real Mosquitto), and per-sink health in ``routerd status``.

routerd watches ``lo`` here with RA and netlink off: it publishes the interface once after start,
which is all a sink needs to have something to deliver, and needs no root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme

from routerd.cli import control_request
from tests.ground.mosquitto import Mosquitto
from tests.ground.ports import free_port
from tests.ground.routerd_proc import Routerd
from tests.ground.waiting import wait_until


def _config(mqtt: str, *, control: Path | None = None, extra: str = "") -> str:
    ctl = f'control_socket = "{control}"\n' if control else ""
    return f"""router_id = "edge"
{ctl}[stdout]
enabled = false
[publish]
heartbeat = 30
[[interface]]
name = "lo"
ra = false
netlink = false
[mqtt]
{mqtt}
{extra}"""


def test_the_start_log_names_the_active_sinks(tmp_path: Path) -> None:
    r = Routerd(None, tmp_path / "r", _config('host = "broker.lan"\nusername = "routerd"\nbase_topic = "dp"'))
    try:
        r.wait_log("publishing to mqtts://broker.lan:8883 as routerd (dp/edge/<interface>/state); "
                   "webhook off; stdout off")  # fmt: skip
    finally:
        r.stop()


@pytest.mark.parametrize(
    ("mqtt", "expect"),
    [
        pytest.param('host = "broker.invalid"\ntls = false', "cannot resolve broker.invalid", id="dns"),
        pytest.param('host = "127.0.0.1"\nport = {free}\ntls = false',
                     "127.0.0.1:{free} refused the connection", id="refused"),
        pytest.param('host = "127.0.0.1"\nport = {tls}\nca_file = "{wrong_ca}"',
                     "TLS verification of 127.0.0.1 failed", id="wrong-ca"),
    ],
)  # fmt: skip
def test_an_unreachable_broker_is_reported_with_its_cause(
    tmp_path: Path, mosquitto: Mosquitto, mqtt: str, expect: str
) -> None:
    wrong_ca = tmp_path / "other-ca.pem"
    trustme.CA(organization_name="not the broker's CA").cert_pem.write_to_path(str(wrong_ca))
    values = {"free": free_port(), "tls": mosquitto.tls_port, "wrong_ca": wrong_ca}
    r = Routerd(None, tmp_path / "r", _config(mqtt.format(**values)))
    try:
        r.wait_log(expect.format(**values))
        assert "down, wrong address, or TLS verification failed" not in r.log()
        if "wrong_ca" in mqtt:
            assert str(wrong_ca) in r.log()  # the CA it checked against
    finally:
        r.stop()


def _status(ctl: Path) -> dict[str, Any]:
    return control_request(ctl, {"op": "status"})


def test_status_reports_per_sink_health_and_is_not_ok_while_the_broker_is_gone(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_base: str
) -> None:
    ctl = tmp_path / "ctl.sock"
    mqtt = f'host = "127.0.0.1"\nport = {mosquitto.plain_port}\ntls = false\nbase_topic = "{mqtt_base}"'
    r = Routerd(None, tmp_path / "r", _config(mqtt, control=ctl))
    try:
        up = wait_until(lambda: ctl.exists() and (s := _status(ctl))["ok"] and s["sinks"][0]["last_success_ago"]
                        is not None and s, timeout=20, what="ok status after a delivery")  # fmt: skip
        (sink,) = up["sinks"]
        assert sink["name"] == "mqtt" and sink["connected"] is True and sink["queued"] == 0
        assert sink["last_success_ago"] is not None and sink["last_error"] is None
        mosquitto.stop()
        down = wait_until(lambda: not (s := _status(ctl))["ok"] and s, timeout=20, what="not-ok status")
        (sink,) = down["sinks"]
        assert sink["connected"] is False and down["problems"]
        assert "mqtt" in down["problems"][0]
        # Then the reconnect attempts fail, and status names why.
        wait_until(lambda: "refused the connection" in (_status(ctl)["sinks"][0]["last_error"] or ""), timeout=20,
                   what="the broker's refusal in status")  # fmt: skip
        mosquitto.start()
        wait_until(lambda: _status(ctl)["ok"], timeout=60, what="ok again after the broker returned")
    finally:
        r.stop()
