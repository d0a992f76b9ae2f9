"""routerd's nftables sets with the real `nft` in a lab namespace, and real packets across the veth.

The host namespace (routerd's) loads a ruleset whose input chain accepts UDP
to the addresses in routerd's range set and drops the rest; the router
namespace (radvd, the ISP) sends datagrams to addresses of the old and the
new prefix. The set follows A, A and B, B; a refused transaction keeps what
the sets held and shows in `routerd status`; a restarted routerd that has
heard no prefix yet leaves the sets alone.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from routerd.cli import control_request
from tests.ground import require
from tests.ground.netlab import AdvPrefix, Lab, inside, run
from tests.ground.routerd_proc import Routerd, routerd_toml
from tests.ground.waiting import wait_until

pytestmark = pytest.mark.lab

A, B = "2001:db8:a::/64", "2001:db8:b::/64"
LB_A, LB_B = "2001:db8:a::f000:0:0:1", "2001:db8:b::f000:0:0:1"
"""Addresses in the range set (::f000:0:0:0 - ::ffff:ffff:ffff:ffff) of each prefix."""
PLAIN_B = "2001:db8:b::1"
"""In B, outside the range."""
PORT = 9999
TABLE = "dp_lab"

RULESET = f"""
table inet {TABLE} {{
    set prefixes {{ type ipv6_addr; flags interval, timeout; }}
    set lb {{ type ipv6_addr; flags interval, timeout; }}
    chain input {{
        type filter hook input priority 0; policy accept;
        udp dport {PORT} ip6 daddr @lb accept
        udp dport {PORT} drop
    }}
}}
"""

NFT = f"""
[nftables]
table = "{TABLE}"
[[nftables.range]]
set = "lb"
start = "::f000:0:0:0"
end = "::ffff:ffff:ffff:ffff"
"""


def pio(net: str, valid: int, preferred: int) -> AdvPrefix:
    # On-link only (A=0): RFC 4862's two-hour rule holds autoconfigured prefixes, so a
    # withdrawal (valid 0, RFC 9096) takes effect at once only for an on-link one.
    return AdvPrefix(net, valid=valid, preferred=preferred, autonomous=False)


def elements(lab: Lab, name: str) -> dict[str, int | None]:
    """The set's elements in the host namespace: network -> timeout in seconds."""
    doc = json.loads(run(["nft", "-j", "list", "set", "inet", TABLE, name], lab.host))
    out: dict[str, int | None] = {}
    for item in doc["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            inner = e["elem"] if isinstance(e, dict) and "elem" in e else {"val": e}
            val = inner["val"]
            net = f"{val['prefix']['addr']}/{val['prefix']['len']}" if isinstance(val, dict) else f"{val}/128"
            out[net] = inner.get("timeout")
    return out


def wait_elements(lab: Lab, name: str, want: set[str], timeout: float = 20.0) -> dict[str, int | None]:
    got: dict[str, int | None] = {}

    def holds() -> bool:
        nonlocal got
        got = elements(lab, name)
        return set(got) == want

    try:
        wait_until(holds, timeout, f"set {name} holding {sorted(want)}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}: it holds {sorted(got)}") from None
    return got


def status(ctl: Path) -> dict[str, Any]:
    return control_request(ctl, {"op": "status"})


def nft_sink(ctl: Path) -> dict[str, Any]:
    return next(s for s in status(ctl)["sinks"] if s["name"] == "nftables")


def delivered(lab: Lab, addresses: list[str]) -> set[str]:
    """Send one datagram from the router namespace to each address; those the host's socket received."""
    with inside(lab.host):
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with inside(lab.router):
        tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx.bind(("::", PORT))
        rx.settimeout(1.5)
        for a in addresses:
            tx.sendto(a.encode(), (a, PORT))
        got: set[str] = set()
        try:
            while len(got) < len(addresses):
                got.add(rx.recv(100).decode())
        except TimeoutError:
            pass
        return got
    finally:
        rx.close()
        tx.close()


def wire(lab: Lab) -> None:
    """The user's ruleset in the host namespace; addresses of both prefixes on the host, routes on the router."""
    require.require_program("nft", "nftables")
    rules = lab.workdir / "rules.nft"
    rules.write_text(RULESET)
    run(["nft", "-f", str(rules)], lab.host)
    for address in (LB_A, LB_B, PLAIN_B):
        lab.add_address(lab.host, lab.host_if, f"{address}/128")
    for net in (A, B):
        run(["ip", "-6", "route", "add", net, "dev", lab.router_if], lab.router)


def test_the_sets_follow_a_renumbering_and_packets_follow_the_sets(lab: Lab, tmp_path: Path) -> None:
    wire(lab)
    ctl = tmp_path / "ctl.sock"
    lab.start_radvd([pio(A, 3600, 1800)])
    config = routerd_toml(lab.host_if, control_socket=ctl, stdout=True) + NFT
    r = Routerd(lab, tmp_path / "r", config)
    try:
        got = wait_elements(lab, "prefixes", {A})
        assert got[A] is not None and 3500 < got[A] <= 3600  # the valid lifetime, counting down
        wait_elements(lab, "lb", {"2001:db8:a:0:f000::/68"})
        assert delivered(lab, [LB_A, LB_B, PLAIN_B]) == {LB_A}

        # Renumbering (RFC 9096): B arrives, A drains; both stay open.
        lab.advertise([pio(A, 600, 0), pio(B, 3600, 1800)])
        got = wait_elements(lab, "prefixes", {A, B})
        assert got[A] is not None and got[A] <= 600
        wait_elements(lab, "lb", {"2001:db8:a:0:f000::/68", "2001:db8:b:0:f000::/68"})
        assert delivered(lab, [LB_A, LB_B, PLAIN_B]) == {LB_A, LB_B}

        # A withdrawn: only B is open.
        lab.advertise([pio(A, 0, 0), pio(B, 3600, 1800)])
        wait_elements(lab, "prefixes", {B})
        wait_elements(lab, "lb", {"2001:db8:b:0:f000::/68"})
        assert delivered(lab, [LB_A, LB_B, PLAIN_B]) == {LB_B}
        sink = nft_sink(ctl)
        assert sink["ok"] is True and sink["target"] == f"table inet {TABLE}", sink
    finally:
        r.stop()

    # routerd restarts while no router answers: its first state is empty, and the sets stay.
    lab.stop_radvd()
    r = Routerd(lab, tmp_path / "r2", config)
    try:
        r.wait_for(lambda m: m["interface"] == lab.host_if and not m["prefixes"])
        wait_until(lambda: nft_sink(ctl)["queued"] == 0, 10, "the empty state handled")
        assert nft_sink(ctl)["ok"] is True
        assert set(elements(lab, "prefixes")) == {B}
        assert delivered(lab, [LB_A, LB_B]) == {LB_B}
    finally:
        r.stop()


def test_a_refused_transaction_keeps_the_sets_and_shows_in_status_until_fixed(
    lab: Lab, tmp_path: Path
) -> None:
    wire(lab)
    ctl = tmp_path / "ctl.sock"
    lab.start_radvd([pio(A, 3600, 1800)])
    r = Routerd(lab, tmp_path / "r", routerd_toml(lab.host_if, control_socket=ctl, stdout=True) + NFT)
    try:
        wait_elements(lab, "prefixes", {A})
        # The user redeclares a set of routerd's without timeouts: routerd's declaration conflicts.
        run(["nft", "flush", "chain", "inet", TABLE, "input"], lab.host)
        run(["nft", "delete", "set", "inet", TABLE, "lb"], lab.host)
        run(["nft", "add", "set", "inet", TABLE, "lb", "{ type ipv6_addr; flags interval; }"], lab.host)
        lab.advertise([pio(A, 600, 0), pio(B, 3600, 1800)])
        wait_until(lambda: not status(ctl)["ok"], 20, "status saying the nftables sink failed")
        problem = status(ctl)["problems"]
        assert any("nftables: table inet dp_lab: the sets were not written" in p and "File exists" in p
                   for p in problem), problem  # fmt: skip
        assert nft_sink(ctl)["queued"] == 1
        assert set(elements(lab, "prefixes")) == {A}, "a refused transaction changed the prefix set"

        run(["nft", "delete", "set", "inet", TABLE, "lb"], lab.host)  # the user fixes it
        wait_elements(lab, "prefixes", {A, B}, timeout=30)  # retried with backoff
        wait_until(lambda: status(ctl)["ok"], 10, "status ok again")
        assert set(elements(lab, "lb")) == {"2001:db8:a:0:f000::/68", "2001:db8:b:0:f000::/68"}
    finally:
        r.stop()


def test_the_documented_ruleset_loads_and_routerds_transaction_fills_it(lab: Lab) -> None:
    """docs/nftables.md's /etc/nftables.conf declares the sets exactly as routerd does (no conflict)."""
    require.require_program("nft", "nftables")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "nftables.md").read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", doc, re.MULTILINE | re.DOTALL)
    ruleset = next(b for b in blocks if b.startswith("# /etc/nftables.conf"))
    transaction = next(b for b in blocks if b.startswith("table inet filter {\n\tset prefixes {"))
    for name, text in (("ruleset.nft", ruleset), ("routerd.nft", transaction), ("again.nft", transaction)):
        (lab.workdir / name).write_text(text)
        run(["nft", "-f", str(lab.workdir / name)], lab.host)
    listed = json.loads(run(["nft", "-j", "list", "set", "inet", "filter", "lb"], lab.host))
    assert len(listed["nftables"][1]["set"]["elem"]) == 2
    assert "@lb" in run(["nft", "list", "chain", "inet", "filter", "forward"], lab.host)
