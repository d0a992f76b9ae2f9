"""The routerd daemon's edges: systemd notifications, the control socket, DHCPv6 hooks, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from routerd.cli import control_request
from tests.ground.netlab import AdvPrefix, Lab, run
from tests.ground.routerd_proc import Routerd, current, states
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.lab

A = "2001:db8:a::/64"
PD = "2001:db8:100::/56"


def base_config(lab: Lab, control: Path) -> str:
    return f"""
router_id = "edge"
control_socket = "{control}"
[publish]
hold_down = 0.2
[[interface]]
name = "{lab.host_if}"
netlink = false
"""


def routerd_cli(lab: Lab, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", lab.host, sys.executable, "-m", "routerd", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=30,
    )


def test_systemd_ready_status_watchdog_and_stopping(lab: Lab, tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", base_config(lab, tmp_path / "ctl.sock"),
                env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"})  # fmt: skip
    got: list[str] = []
    try:
        r.wait_for(lambda m: current(m) == A)

        def heard_all() -> bool:
            got.append(notify.recv(4096).decode())
            return (
                any("READY=1" in g for g in got)
                and sum("WATCHDOG=1" in g for g in got) >= 2
                and any(f"STATUS={lab.host_if}: {A}" in g for g in got)
            )

        wait_until(heard_all, what="READY, STATUS and two WATCHDOG pings")
        r.stop()
        while not any("STOPPING=1" in g for g in got):
            got.append(notify.recv(4096).decode())
    finally:
        r.stop()
        notify.close()
    assert r.proc.returncode == 0


def test_dhcpv6_hooks_feed_delegations_and_status_reports_them(lab: Lab, tmp_path: Path) -> None:
    ctl = tmp_path / "ctl.sock"
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", base_config(lab, ctl))
    try:
        r.wait_for(lambda m: current(m) == A)
        wait_until(ctl.exists, what="control socket")
        out = routerd_cli(lab, "hook", "--socket", str(ctl), "odhcp6c", "wan", "bound",
                          env={"PREFIXES": f"{PD},3600,7200"})  # fmt: skip
        assert out.returncode == 0, out.stderr
        msg = r.wait_for(lambda m: m["interface"] == "wan" and current(m) == PD)
        assert msg["prefixes"][0]["sources"] == ["dhcpv6-pd"]
        assert msg["prefixes"][0]["validLifetime"] == 7200

        out = routerd_cli(lab, "hook", "--socket", str(ctl), "dhcpcd", "wan", env={"reason": "EXPIRE6"})
        assert out.returncode == 0, out.stderr
        r.wait_for(lambda m: m["interface"] == "wan" and states(m) == {PD: "withdrawn"})

        status = routerd_cli(lab, "status", "--socket", str(ctl))
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert set(doc["interfaces"]) == {lab.host_if, "wan"}
        assert doc["ra_listening"] == [lab.host_if] and doc["ras_accepted"] >= 1

        bad = routerd_cli(lab, "hook", "--socket", str(ctl), "odhcp6c", "wan", "updated",
                          env={"PREFIXES": "2001:db8::/56,soon,7200"})  # fmt: skip
        assert bad.returncode == 2 and "not a number of seconds" in bad.stderr

        # A request straight to the socket, past the CLI's parsers: a lifetime beyond 32 bits is refused
        # with a reason, and the daemon goes on publishing for that interface.
        huge = control_request(ctl, {"op": "delegated", "interface": "wan",
                                     "prefixes": [[str(PD), 2**40, 60]]})  # fmt: skip
        assert huge["ok"] is False and "outside 0..4294967295" in huge["error"]
        out = routerd_cli(lab, "hook", "--socket", str(ctl), "odhcp6c", "wan", "bound",
                          env={"PREFIXES": f"{PD},1800,3600"})  # fmt: skip
        assert out.returncode == 0, out.stderr
        r.wait_for(lambda m: m["interface"] == "wan" and current(m) == PD)
    finally:
        r.stop()


def test_status_without_a_daemon_says_so(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "routerd", "status", "--socket", str(tmp_path / "none")],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode != 0 and "is it running?" in out.stderr


def test_an_invalid_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text("[mqtt]\nhots = 'broker'\n")
    out = subprocess.run([sys.executable, "-m", "routerd", "run", "--config", str(bad)],
                         capture_output=True, text=True, check=False, timeout=30)  # fmt: skip
    assert out.returncode == 2
    assert "mqtt.hots: unknown key" in out.stderr and "mqtt.host: required key is missing" in out.stderr


def test_sigint_also_stops_cleanly(lab: Lab, tmp_path: Path) -> None:
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    r = Routerd(lab, tmp_path / "r", base_config(lab, tmp_path / "ctl.sock"))
    r.wait_for(lambda m: current(m) == A)
    r.signal(signal.SIGINT)
    assert r.proc.wait(timeout=10) == 0
    assert not (tmp_path / "ctl.sock").exists()


def test_once_prints_the_current_state_and_exits(lab: Lab) -> None:
    lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
    out = routerd_cli(lab, "once", "-i", lab.host_if, "--wait", "3")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    assert current(json.loads(line)) == A


def test_json_logs_are_one_object_per_line(lab: Lab, tmp_path: Path) -> None:
    r = Routerd(lab, tmp_path / "r", base_config(lab, tmp_path / "ctl.sock"), args=["--log-format", "json"])
    try:
        lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
        r.wait_for(lambda m: current(m) == A)
        r.wait_log('"change": "appeared"')
        docs = [json.loads(line) for line in r.stderr_lines if line.startswith("{")]
        assert any(d.get("prefix") == A and d["level"] == "info" for d in docs)
    finally:
        r.stop()


def test_a_missing_interface_is_named_waited_for_and_picked_up(lab: Lab, tmp_path: Path) -> None:
    """``run -i`` with an interface that does not exist yet names it and those that do, then opens
    its RA socket when it appears (a PPP or WireGuard link that comes up after routerd)."""
    r = Routerd(lab, tmp_path / "r", f'control_socket = "{tmp_path / "ctl.sock"}"\n', args=["-i", "late0"])
    try:
        r.wait_log(
            f"interface late0 does not exist; this host has: lo, {lab.host_if}; waiting for it to appear"
        )
        run(["ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1"], lab.host)
        for link in ("late1", "late0"):
            run(["ip", "link", "set", link, "up"], lab.host)
        r.wait_log("waiting for a Router Advertisement on late0 (sent a Router Solicitation)")
        assert "None" not in r.log()
    finally:
        r.stop()


def test_ula_and_static_addresses_are_named_with_the_key_that_counts_them(lab: Lab, tmp_path: Path) -> None:
    """A link with only a ULA (from SLAAC-like lifetimes) and a static global address publishes no prefix:
    the start log and ``routerd status`` say why and which key would count each."""
    run(["ip", "-6", "addr", "add", "fd00:5::1/64", "dev", lab.host_if, "nodad", "valid_lft", "3600",
         "preferred_lft", "1800"], lab.host)  # fmt: skip
    lab.add_address(lab.host, lab.host_if, "2001:db8:5::1/64")  # static: the kernel marks it permanent
    ctl = tmp_path / "ctl.sock"
    r = Routerd(lab, tmp_path / "r", f"""
control_socket = "{ctl}"
[[interface]]
name = "{lab.host_if}"
""")  # fmt: skip
    try:
        r.wait_log(f"waiting for a Router Advertisement on {lab.host_if} (sent a Router Solicitation)")
        r.wait_log(f"no prefix counted on {lab.host_if} yet; not counting")
        assert "fd00:5::1/64 (unique-local: set tracker.allow_ula = true to count it)" in r.log()
        assert "2001:db8:5::1/64 (static: set tracker.include_static = true to count it)" in r.log()
        msg = r.wait_for(lambda m: m["interface"] == lab.host_if)
        assert msg["prefixes"] == []
        wait_until(ctl.exists, what="control socket")
        status = json.loads(routerd_cli(lab, "status", "--socket", str(ctl)).stdout)
        assert status["not_counted"] == {lab.host_if: [
            "2001:db8:5::1/64 (static: set tracker.include_static = true to count it)",
            "fd00:5::1/64 (unique-local: set tracker.allow_ula = true to count it)",
        ]}  # fmt: skip
    finally:
        r.stop()
