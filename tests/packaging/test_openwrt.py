"""contrib/openwrt: UCI configuration, the shell-only publisher under busybox ash, the netifd hook, the package.

OpenWrt itself cannot run here. What can is real: Debian's busybox ash runs
the publisher and the hook, Mosquitto, curl, openssl and the real clusterd and
kube-apiserver receive what it sends. Only OpenWrt's own ``uci`` and ``ubus``
commands are stand-ins (two-line scripts printing what they would print).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from routerd import config as cfgmod
from routerd.core import wire
from tests.ground.require import require_program
from tests.ground.routerd_proc import Routerd, current

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "contrib" / "openwrt" / "files"
PUBLISH = FILES / "prefix-publish.sh"
SCHEMA = json.loads((ROOT / "docs" / "wire-schema.json").read_text())

pytestmark = pytest.mark.packaging


# -- UCI --------------------------------------------------------------------------------------


def test_the_shipped_uci_file_is_a_valid_configuration() -> None:
    cfg = cfgmod.load(FILES / "routerd.config")
    assert [i.name for i in cfg.interface] == ["br-lan"]
    assert cfg.mqtt is None and cfg.webhook == ()  # disabled sections
    assert str(cfg.state_dir) == "/etc/routerd"


def _uci_sections(text: str) -> list[tuple[str, str | None, list[list[str]]]]:
    """(type, name, option and list lines) per ``config`` section."""
    sections: list[tuple[str, str | None, list[list[str]]]] = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "config":
            sections.append((words[1], words[2] if len(words) > 2 else None, []))
        elif words:
            sections[-1][2].append(words)
    return sections


def test_the_openwrt_quick_starts_edit_of_the_shipped_file_turns_mqtt_on(tmp_path: Path) -> None:
    """The quick start says to edit /etc/config/routerd: its snippet's options, set in the shipped
    file's sections of the same type (as `uci set` would), must leave MQTT on (it ships off)."""
    doc = (ROOT / "docs" / "quickstart-openwrt-mqtt.md").read_text()
    snippet = next(
        b for b in re.findall(r"^```[a-z]*\n(.*?)^```", doc, re.S | re.M) if b.startswith("config routerd")
    )
    shipped = _uci_sections((FILES / "routerd.config").read_text())
    for stype, _name, lines in _uci_sections(snippet):
        target = next(opts for t, _, opts in shipped if t == stype)
        for words in lines:
            target[:] = [w for w in target if w[:2] != words[:2]] + [words]
    edited = tmp_path / "routerd"
    edited.write_text("".join(f"config {t}\n" + "".join(f"\t{w[0]} {w[1]} '{w[2]}'\n" for w in opts) + "\n"
                              for t, _, opts in shipped))  # fmt: skip
    cfg = cfgmod.load(edited)
    assert cfg.mqtt is not None and cfg.mqtt.host == "broker.lan" and cfg.mqtt.username == "routerd"
    assert cfg.router_id == "edge-1" and [i.name for i in cfg.interface] == ["br-lan"]


def test_uci_maps_onto_the_toml_keys(tmp_path: Path) -> None:
    uci = tmp_path / "routerd"
    uci.write_text("""
config routerd 'main'
	option router_id 'edge-1'
	option log_format 'json'

config interface
	option name 'br-lan'
	option ra '0'
	list allowed_routers 'fe80::1'
	list allowed_routers 'fe80::2'

config interface
	option name "wan"

config tracker
	option allow_ula '1'
	option max_prefixes '8'

config mqtt
	option host 'broker.lan'
	option port '8883'
	option username 'routerd'

config webhook
	option url 'https://cluster.example/v1/prefix-state'
	option secret_env 'HOOK_KEY'
""")
    cfg = cfgmod.load(uci)
    toml = cfgmod.parse({
        "router_id": "edge-1", "log_format": "json",
        "interface": [{"name": "br-lan", "ra": False, "allowed_routers": ["fe80::1", "fe80::2"]}, {"name": "wan"}],
        "tracker": {"allow_ula": True, "max_prefixes": 8},
        "mqtt": {"host": "broker.lan", "port": 8883, "username": "routerd"},
        "webhook": [{"url": "https://cluster.example/v1/prefix-state", "secret_env": "HOOK_KEY"}],
    })  # fmt: skip
    assert cfg == toml


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("option router_id 'x'\n", ":1: option before any config section"),
        ("config routerd\n\toption router_id 'unterminated\n", ":2: No closing quotation"),
        ("config bogus\n", "unknown section type 'bogus'"),
        ("config interface\n\toption nam 'eth0'\n", "interface.0.nam: unknown key"),
        ("config routerd\n\tset x 1\n", ":2: unknown keyword 'set'"),
    ],
)
def test_uci_errors_name_the_line_or_key(tmp_path: Path, text: str, fragment: str) -> None:
    uci = tmp_path / "routerd"
    uci.write_text(text)
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.load(uci)
    assert fragment in str(err.value)


# -- the shell-only publisher ------------------------------------------------------------------


def publish(*args: str, env: dict[str, str] | None = None, state: Path) -> subprocess.CompletedProcess[str]:
    busybox = require_program("busybox", "busybox")
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **(env or {})}
    argv = [busybox, "ash", str(PUBLISH), "--state", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env)


def test_its_message_is_the_wire_contract(tmp_path: Path) -> None:
    out = publish("-r", "edge-1", "-i", "wan", "2001:db8:100::/56,3600,7200", "2001:DB8:99::/56,0,300",
                  "2001:db8:98::/56,0,0", "2001:db8:97::/48,4294967295,4294967295", state=tmp_path / "seq")  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    jsonschema.validate(doc, SCHEMA)
    msg = wire.decode(out.stdout)
    assert [(str(p.prefix), p.state.value, p.valid_lifetime, p.preferred_lifetime) for p in msg.prefixes] == [
        ("2001:db8:100::/56", "preferred", 7200, 3600),
        ("2001:db8:97::/48", "preferred", None, None),
        ("2001:db8:99::/56", "deprecated", 300, 0),
        ("2001:db8:98::/56", "withdrawn", 0, 0),
    ]
    assert msg.prefixes[0].sources == (wire.SourceKind.DHCPV6_PD,)


def test_odhcp6c_style_input_and_a_sequence_that_never_goes_back(tmp_path: Path) -> None:
    state = tmp_path / "seq"
    state.write_text("99999999999999\n")  # far ahead of the clock: it must still go up from here
    env = {"PREFIXES": "2001:db8:100::/56,3600,7200,class=wan6,excluded=2001:db8:100::/64"}
    first = json.loads(publish("-r", "edge", "-i", "wan6", env=env, state=state).stdout)
    second = json.loads(publish("-r", "edge", "-i", "wan6", env=env, state=state).stdout)
    assert first["sequence"] == 99999999999999 + 1 and second["sequence"] == first["sequence"] + 1
    assert first["boot"] == second["boot"] and re.fullmatch(r"[0-9a-f]{16}", first["boot"])
    state.unlink()  # a lost state file: the synced clock still puts it above anything before
    assert (
        json.loads(publish("-r", "edge", "-i", "wan6", env=env, state=state).stdout)["sequence"]
        > 1_735_689_600_000
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-i", "wan", "2001:db8::/56,1,2"], "-r ROUTER is required"),
        (["-r", "edge", "-i", "w an", "2001:db8::/56,1,2"], "-i INTERFACE is required"),
        (["-r", "edge", "-i", "wan", "2001:db8::/56,soon,2"], "lifetimes are whole seconds"),
        (["-r", "edge", "-i", "wan", "2001:db8::/56,20,10"], "preferred lifetime exceeds valid"),
        (["-r", "edge", "-i", "wan", "not-a-prefix,1,2"], "expected PREFIX/LEN"),
        (["-r", "edge", "-i", "wan", "2001:db8::/56,3600"], "expected PREFIX/LEN"),
        (["-r", "edge", "-i", "wan", "2001:db8::/56,,7200"], "lifetimes are whole seconds"),
        (["-r", "edge", "-i", "wan", "--webhook", "https://x/"], "--webhook needs --secret-file"),
        (["-r", "edge", "-i", "wan", "--frobnicate"], "unknown option"),
    ],
)
def test_bad_input_is_refused_with_a_reason(tmp_path: Path, args: list[str], fragment: str) -> None:
    out = publish(*args, state=tmp_path / "seq")
    assert out.returncode == 2 and fragment in out.stderr and out.stdout == ""


@pytest.mark.parametrize(
    ("broker", "host_port"),
    [
        ("[2001:db8::1]:8883", ["-h", "2001:db8::1", "-p", "8883"]),
        ("[2001:db8::1]", ["-h", "2001:db8::1"]),
        ("2001:db8::1", ["-h", "2001:db8::1"]),
        ("broker.lan:1884", ["-h", "broker.lan", "-p", "1884"]),
        ("broker.lan", ["-h", "broker.lan"]),
    ],
)
def test_the_broker_address_reaches_mosquitto_pub_whole(
    tmp_path: Path, broker: str, host_port: list[str]
) -> None:
    # A stand-in mosquitto_pub that prints its arguments: only the address parsing is under test here
    # (the real broker is in test_clusterd_accepts_it_over_the_webhook_and_mqtt).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mosquitto_pub").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (bindir / "mosquitto_pub").chmod(0o755)
    out = publish("-r", "edge", "-i", "wan", "--mqtt", broker, "2001:db8:100::/56,3600,7200",
                  env={"PATH": f"{bindir}:/usr/bin:/bin"}, state=tmp_path / "seq")  # fmt: skip
    assert out.returncode == 0, out.stderr
    args = out.stdout.splitlines()
    got = args[: args.index("-q")] + (args[args.index("-p") : args.index("-p") + 2] if "-p" in args else [])
    assert got == host_port


@pytest.mark.apiserver
@pytest.mark.mqtt
def test_clusterd_accepts_it_over_the_webhook_and_mqtt(cluster: Any, mosquitto: Any, tmp_path: Path) -> None:
    from tests.clusterd.test_clusterd import create_dp
    from tests.clusterd.test_clusterd import current as dp_current
    from tests.ground.clusterd_proc import Clusterd
    from tests.ground.waiting import wait_until

    create_dp(cluster, router="tiny", interface="wan")
    cd = Clusterd(cluster, tmp_path / "clusterd", mqtt_port=mosquitto.plain_port)
    try:
        cd.wait_ready()
        out = publish("-r", "tiny", "-i", "wan", "--webhook", cd.webhook_url, "--secret-file", str(cd.secret_file),
                      "2001:db8:100::/56,3600,7200", state=tmp_path / "seq")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert dp_current(cluster) == "2001:db8:100::/56"
        out = publish("-r", "tiny", "-i", "wan", "--mqtt", f"127.0.0.1:{mosquitto.plain_port}",
                      "2001:db8:200::/56,3600,7200", "2001:db8:100::/56,0,600", state=tmp_path / "seq")  # fmt: skip
        assert out.returncode == 0, out.stderr
        wait_until(lambda: dp_current(cluster) == "2001:db8:200::/56", what="the MQTT message applied")
        bad = publish("-r", "tiny", "-i", "wan", "--webhook", cd.webhook_url, "--secret-file", str(tmp_path / "seq"),
                      "2001:db8:300::/56,3600,7200", state=tmp_path / "seq2")  # fmt: skip
        assert (
            bad.returncode == 1
            and "refused the message (401)" in bad.stderr
            and "bad signature" in bad.stderr
        )
    finally:
        cd.stop()


# -- the netifd hotplug hook -------------------------------------------------------------------

UBUS_STATUS = {"ipv6-prefix": [{"address": "2001:db8:5600::", "mask": 56, "preferred": 3600, "valid": 7200}]}


def test_the_hotplug_hook_hands_netifds_delegation_to_routerd(tmp_path: Path) -> None:
    busybox = require_program("busybox", "busybox")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Stand-ins for OpenWrt's uci and ubus (they do not exist on Debian); logger must stay quiet.
    (bin_dir / "uci").write_text('#!/bin/sh\n[ "$3" = "network.wan6.proto" ] && echo dhcpv6\n')
    (bin_dir / "ubus").write_text(f"#!/bin/sh\necho '{json.dumps(UBUS_STATUS)}'\n")
    (bin_dir / "logger").write_text('#!/bin/sh\necho "logger: $*" >&2\n')
    (bin_dir / "routerd").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m routerd "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    ctl = tmp_path / "ctl.sock"
    r = Routerd(None, tmp_path / "r", f'control_socket = "{ctl}"\n[[interface]]\nname = "lo"\nra = false\n')
    try:
        from tests.ground.waiting import wait_until

        wait_until(ctl.exists, what="routerd's control socket")
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ROUTERD_SOCKET": str(ctl), "INTERFACE": "wan6",
               "ACTION": "ifupdate", "IFUPDATE_PREFIXES": "1", "PYTHONPATH": str(ROOT)}  # fmt: skip
        out = subprocess.run([busybox, "ash", str(FILES / "95-routerd")], env=env, capture_output=True, text=True,
                             check=False)  # fmt: skip
        assert out.returncode == 0 and "logger" not in out.stderr, out.stderr
        msg = r.wait_for(lambda m: m["interface"] == "wan6")
        assert current(msg) == "2001:db8:5600::/56"
        ignored = subprocess.run([busybox, "ash", str(FILES / "95-routerd")], env={**env, "IFUPDATE_PREFIXES": "0"},
                                 capture_output=True, text=True, check=False)  # fmt: skip
        assert ignored.returncode == 0
    finally:
        r.stop()


def test_the_package_makefile_matches_the_project() -> None:
    makefile = (ROOT / "contrib" / "openwrt" / "Makefile").read_text()
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None and f"PKG_VERSION:={version.group(1)}" in makefile
    for name in re.findall(r"\./files/([\w.-]+)", makefile):
        assert (FILES / name).exists(), f"the Makefile installs files/{name}, which does not exist"
    assert "+python3-pydantic" in makefile and "+python3-paho-mqtt" in makefile
