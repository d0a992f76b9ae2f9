"""routerd's netlink source on a real kernel: SLAAC addresses and RTM_NEWPREFIX.

The host namespace processes RAs itself (accept_ra=2), so the kernel creates
an address from radvd's prefix and reports the PIO as RTM_NEWPREFIX; routerd
listens with netlink only (no raw socket).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ground.netlab import AdvPrefix, Lab, run
from tests.ground.routerd_proc import Routerd, states

pytestmark = pytest.mark.lab

A = "2001:db8:a::/64"


def entry(msg: dict[str, object], prefix: str) -> dict[str, object] | None:
    return next((p for p in msg["prefixes"] if p["prefix"] == prefix), None)  # type: ignore[attr-defined,index]


def test_kernel_slaac_address_added_deprecated_removed(lab: Lab, tmp_path: Path) -> None:
    lab.sysctl(lab.host, f"net.ipv6.conf.{lab.host_if}.accept_ra", 2)
    r = Routerd(lab, tmp_path / "r", f"""
[publish]
hold_down = 0.2
[[interface]]
name = "{lab.host_if}"
ra = false
""")  # fmt: skip
    try:
        lab.start_radvd([AdvPrefix(A, valid=3600, preferred=1800)])
        msg = r.wait_for(
            lambda m: (e := entry(m, A)) is not None and set(e["sources"]) == {"kernel-ra", "address"}
        )
        assert states(msg)[A] == "preferred"
        kernel_addr = [a for a in lab.addresses(lab.host, lab.host_if) if a.get("scope") == "global"]
        assert kernel_addr and kernel_addr[0]["local"].startswith("2001:db8:a:")

        lab.advertise([AdvPrefix(A, valid=3600, preferred=0)])
        r.wait_for(lambda m: states(m).get(A) == "deprecated")

        run(["ip", "-6", "addr", "del", f"{kernel_addr[0]['local']}/64", "dev", lab.host_if], lab.host)
        msg = r.wait_for(lambda m: (e := entry(m, A)) is not None and e["sources"] == ["kernel-ra"])
        # Still listed as it was: the kernel's RA-learned prefix lives on without the address.
        assert states(msg)[A] == "deprecated"
        assert 3500 < entry(msg, A)["validLifetime"] <= 3600  # type: ignore[index,operator]
    finally:
        r.stop()


def test_a_restart_relearns_addresses_from_the_dump(lab: Lab, tmp_path: Path) -> None:
    lab.add_address(lab.host, lab.host_if, "2001:db8:a::10/64")
    run(["ip", "-6", "addr", "change", "2001:db8:a::10/64", "dev", lab.host_if,
         "valid_lft", "3600", "preferred_lft", "1800"], lab.host)  # fmt: skip
    cfg = f'[[interface]]\nname = "{lab.host_if}"\nra = false\n'
    first = Routerd(lab, tmp_path / "r", cfg)
    try:
        m1 = first.wait_for(lambda m: states(m).get(A) == "preferred")
    finally:
        first.stop()
    second = Routerd(lab, tmp_path / "r", cfg)  # same state directory
    try:
        m2 = second.wait_for(lambda m: states(m).get(A) == "preferred")
        assert m2["sequence"] > m1["sequence"] and m2["boot"] != m1["boot"]
        assert 1700 < entry(m2, A)["preferredLifetime"] <= 1800  # type: ignore[index,operator]
    finally:
        second.stop()
