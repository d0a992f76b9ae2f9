"""contrib/systemd: the hardened unit passes systemd-analyze, and the dhcpcd hook carries a real delegation.

The DHCPv6-PD test is real end to end: ISC dhcpd -6 delegates a /56 in the
router namespace, dhcpcd in the host namespace takes it and runs the shipped
exit hook, which hands it to the real routerd over its control socket.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ground.netlab import Lab
from tests.ground.require import require_program, require_root
from tests.ground.routerd_proc import Routerd, current

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "contrib" / "systemd"
SHELL_FILES = [
    SYSTEMD / "dhcpcd.exit-hook",
    SYSTEMD / "networkd-dispatcher" / "50-routerd",
    ROOT / "contrib" / "openwrt" / "files" / "prefix-publish.sh",
    ROOT / "contrib" / "openwrt" / "files" / "95-routerd",
    ROOT / "contrib" / "openwrt" / "files" / "routerd.init",
    ROOT / "scripts" / "lib.sh",
    ROOT / "scripts" / "run",
    ROOT / "scripts" / "test",
    ROOT / "scripts" / "demo",
    ROOT / "scripts" / "bench",
    ROOT / ".ci" / "run",
]


def test_every_shell_file_is_shellcheck_clean() -> None:
    shellcheck = require_program("shellcheck", "shellcheck")
    out = subprocess.run([shellcheck, "-x", *map(str, SHELL_FILES)], capture_output=True, text=True, check=False,
                         cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stdout


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_program("systemd-analyze", "systemd")
    routerd = Path(sys.executable).parent / "routerd"
    unit = tmp_path / "routerd.service"
    unit.write_text(
        (SYSTEMD / "routerd.service").read_text().replace("/opt/routerd/bin/routerd", str(routerd))
    )
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "routerd.service" not in out.stderr, out.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Type=notify", "Type=notify\nProtectSystem=stricter"))
    complaint = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, check=False)
    assert "protect system value" in complaint.stderr.lower()


def test_the_unit_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(SYSTEMD / "routerd.service")
    s = unit["Service"]
    assert (s["Type"], s["DynamicUser"], s["NoNewPrivileges"], s["ProtectSystem"]) == (
        "notify",
        "yes",
        "yes",
        "strict",
    )
    assert s["AmbientCapabilities"] == s["CapabilityBoundingSet"] == "CAP_NET_RAW"
    assert "WatchdogSec" in s and "RestrictAddressFamilies" in s


def test_the_default_route_is_found_under_the_units_proc_subset() -> None:
    """``ProcSubset=pid`` hides /proc/net; routerd's embedded default still finds its interface."""
    require_root()
    unshare = require_program("unshare", "util-linux")
    assert "ProcSubset=pid" in (SYSTEMD / "routerd.service").read_text()
    probe = "from routerd.adapters.routes import default_route_interface as d; print(d())"
    host = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    out = subprocess.run(
        [unshare, "--mount", "--pid", "--fork", "sh", "-c",
         f'mount -t proc -o subset=pid proc /proc && test ! -e /proc/net && exec "{sys.executable}" -c "{probe}"'],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == host.stdout.strip() != "None"


DHCPD_CONF = """
default-lease-time 600;
max-lease-time 7200;
preferred-lifetime 300;
subnet6 2001:db8:ffff::/64 {
  range6 2001:db8:ffff::100 2001:db8:ffff::1ff;
  prefix6 2001:db8:100:: 2001:db8:100:: /56;
}
"""


@pytest.mark.lab
def test_a_real_dhcpv6_delegation_reaches_routerd_through_the_dhcpcd_hook(lab: Lab, tmp_path: Path) -> None:
    dhcpd = require_program("dhcpd", "isc-dhcp-server")
    dhcpcd = require_program("dhcpcd", "dhcpcd-base")
    ctl = tmp_path / "ctl.sock"
    r = Routerd(
        lab, tmp_path / "r", f'control_socket = "{ctl}"\n[[interface]]\nname = "{lab.host_if}"\nra = false\n'
    )
    try:
        lab.add_address(lab.router, lab.router_if, "2001:db8:ffff::1/64")
        (tmp_path / "dhcpd6.conf").write_text(DHCPD_CONF)
        (tmp_path / "leases6").write_text("")
        lab.popen(lab.router, [dhcpd, "-6", "-f", "-cf", str(tmp_path / "dhcpd6.conf"), "-lf",
                               str(tmp_path / "leases6"), "-pf", str(tmp_path / "dhcpd6.pid"), lab.router_if],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        # dhcpcd runs the shipped hook; the wrapper only points it at this test's routerd.
        wrapper = tmp_path / "hook"
        wrapper.write_text(f'#!/bin/sh\nexport PATH="{Path(sys.executable).parent}:$PATH" ROUTERD_SOCKET="{ctl}"\n'
                           f'. "{SYSTEMD / "dhcpcd.exit-hook"}"\n')  # fmt: skip
        wrapper.chmod(0o755)
        conf = tmp_path / "dhcpcd.conf"
        conf.write_text("ipv6only\nnoipv6rs\nia_pd 1\n")
        lab.popen(lab.host, [dhcpcd, "-6", "-B", "-f", str(conf), "-c", str(wrapper), lab.host_if],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})  # fmt: skip
        msg = r.wait_for(
            lambda m: m["interface"] == lab.host_if and current(m) == "2001:db8:100::/56", timeout=40
        )
        entry = msg["prefixes"][0]
        assert (
            entry["sources"] == ["dhcpv6-pd"]
            and entry["validLifetime"] <= 600
            and entry["preferredLifetime"] <= 300
        )
    finally:
        r.stop()
        lab.destroy()  # dhcpcd and dhcpd go with the lab; their lease file must not outlive it
        Path(f"/var/lib/dhcpcd/{lab.host_if}.lease6").unlink(missing_ok=True)
