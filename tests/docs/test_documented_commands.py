"""What the docs tell a user to type or copy works: the broker check, the ACL, the standalone clusterd file.

Commands are taken from the markdown itself, so a doc that drifts from what
works fails here. Where a doc names the user's machine (``broker.lan``, port
8883, ``/etc/routerd/...``), the test substitutes the test broker's host, port
and files, and nothing else.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from clusterd import config as clusterd_config
from tests.ground.mosquitto import ACL, USERS, Mosquitto
from tests.ground.mqttclient import publish
from tests.ground.require import require_program

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """The shell commands of a block, with backslash continuations joined."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_every_doc_shows_the_same_mosquitto_acl_and_the_tests_broker_runs_it() -> None:
    acls = {
        str(p.relative_to(ROOT)): b
        for p in [*DOCS.glob("*.md"), ROOT / "README.md"]
        for b in code_blocks(p)
        if "topic readwrite" in b
    }
    assert {"docs/quickstart-openwrt-mqtt.md", "docs/mqtt.md"} <= set(acls)
    assert len(set(acls.values())) == 1, acls
    assert ACL.startswith(next(iter(acls.values()))), "the tests' broker must run the documented ACL"


@pytest.mark.mqtt
def test_the_openwrt_quick_starts_mosquitto_sub_check_reaches_its_broker(
    mosquitto: Mosquitto, mqtt_base: str, tmp_path: Path
) -> None:
    require_program("mosquitto_sub", "mosquitto-clients")
    doc = DOCS / "quickstart-openwrt-mqtt.md"
    (check,) = [c for b in code_blocks(doc) for c in commands(b) if c.startswith("mosquitto_sub")]
    password = tmp_path / "mqtt.pass"
    password.write_text(USERS["routerd"])
    # The quick start's broker, played by the tests' TLS listener (its certificate names localhost).
    for theirs, ours in {
        "broker.lan": "localhost",
        "-p 8883": f"-p {mosquitto.tls_port}",
        "/etc/routerd/ca.pem": str(mosquitto.ca_file),
        "/etc/routerd/mqtt.pass": str(password),
    }.items():
        assert theirs in check, f"the check no longer says {theirs!r}: {check}"
        check = check.replace(theirs, ours)
    topic = f"{mqtt_base}/edge-1/br-lan/state"
    publish(mosquitto.auth_port, topic, '{"sequence": 1}', retain=True,
            username="routerd", password=USERS["routerd"])  # fmt: skip
    out = subprocess.run(
        ["sh", "-c", f"{check} -C 1 -W 10"], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, f"{shlex.quote(check)}: {out.stderr}"
    assert out.stdout.startswith("dynamic-prefix/"), out.stdout


def test_the_standalone_clusterd_example_is_a_valid_configuration_with_every_key(tmp_path: Path) -> None:
    (example,) = [b for b in code_blocks(DOCS / "clusterd.md") if b.startswith("# clusterd.yaml")]
    path = tmp_path / "clusterd.yaml"
    path.write_text(example)
    cfg = clusterd_config.load(path)
    assert cfg.mqtt is not None and cfg.webhook is not None
    keys = {f.alias or name for name, f in clusterd_config.Config.model_fields.items()}
    assert keys == set(yaml.safe_load(example)), "the example sets every top-level key"
