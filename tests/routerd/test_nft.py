"""The nftables sink without a kernel: set contents, the `nft -f` script, fw4 loadfiles, the config.

The real `nft` in a lab namespace is in test_lab_nft.py. Here: what the
pure core computes (routerd/core/nftsets.py), the `[nftables]` section's
checks, and the sink's behaviour where nothing of nftables can run — `nft`
missing, and OpenWrt's fw4, which does not run on this machine.
"""

from __future__ import annotations

import asyncio
import os
import re
import tomllib
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd import config as cfgmod
from routerd.adapters.nft import NftSink
from routerd.core import nftsets
from routerd.core.nftsets import MAX_TIMEOUT, RangeSet, Received
from routerd.core.wire import Prefix, PrefixState, PrefixStatus, SourceKind

A, B, C = IPv6Network("2001:db8:a::/64"), IPv6Network("2001:db8:b::/64"), IPv6Network("2001:db8:c::/64")
LB = RangeSet("lb", IPv6Address("::f000:0:0:0"), IPv6Address("::ffff:ffff:ffff:ffff"))


def prefix(net: IPv6Network, status: PrefixStatus, valid: int | None, preferred: int | None = None) -> Prefix:
    if preferred is None:
        preferred = 0 if status is not PrefixStatus.PREFERRED else valid
    return Prefix(prefix=net, state=status, valid_lifetime=valid, preferred_lifetime=preferred,
                  sources=(SourceKind.RA,))  # fmt: skip


def state(*prefixes: Prefix, interface: str = "eth0") -> PrefixState:
    return PrefixState(router="edge", interface=interface, boot="0123456789abcdef", sequence=1,
                       observed_at="2026-11-29T00:00:00Z", prefixes=prefixes)  # fmt: skip


# -- which prefixes, with which timeout ----------------------------------------------------


def test_current_and_draining_prefixes_count_withdrawn_ones_do_not() -> None:
    s = state(
        prefix(B, PrefixStatus.PREFERRED, 3600, 1800),
        prefix(A, PrefixStatus.DEPRECATED, 600),
        prefix(C, PrefixStatus.WITHDRAWN, 0),
    )
    assert nftsets.valid_prefixes([Received(s, at=100.0)], now=100.0) == {B: 3600, A: 600}


def test_timeouts_count_down_from_arrival_and_round_up_never_to_zero() -> None:
    s = state(prefix(B, PrefixStatus.PREFERRED, 3600, 1800), prefix(A, PrefixStatus.DEPRECATED, 10))
    got = nftsets.valid_prefixes([Received(s, at=100.0)], now=109.5)
    # 0.5 s left is still valid: a timeout of 0 would make nftables keep A for ever.
    assert got == {B: 3591, A: 1}
    assert nftsets.valid_prefixes([Received(s, at=100.0)], now=110.0) == {B: 3590}


def test_infinite_and_huge_lifetimes_get_the_largest_timeout_every_kernel_keeps() -> None:
    s = state(prefix(A, PrefixStatus.PREFERRED, None, None), prefix(B, PrefixStatus.DEPRECATED, 0xFFFFFFFE))
    assert nftsets.valid_prefixes([Received(s, at=0.0)], now=0.0) == {A: MAX_TIMEOUT, B: MAX_TIMEOUT}


def test_a_prefix_on_two_interfaces_keeps_the_longer_lifetime() -> None:
    one = Received(state(prefix(A, PrefixStatus.PREFERRED, 300, 300), interface="wan"), at=0.0)
    two = Received(state(prefix(A, PrefixStatus.DEPRECATED, 900), interface="lan"), at=0.0)
    assert nftsets.valid_prefixes([one, two], now=0.0) == {A: 900}


# -- set contents --------------------------------------------------------------------------


def test_a_range_set_holds_the_exact_cidrs_of_the_range_in_every_valid_prefix() -> None:
    sets = nftsets.contents("prefixes", [LB], {A: 600, B: 3600})
    assert list(sets) == ["prefixes", "lb"]
    assert sets["prefixes"] == ((A, 600), (B, 3600))
    assert sets["lb"] == (
        (IPv6Network("2001:db8:a:0:f000::/68"), 600),
        (IPv6Network("2001:db8:b:0:f000::/68"), 3600),
    )


def test_ranges_naming_one_set_go_into_it_together() -> None:
    web = RangeSet("lb", IPv6Address("::1:0:0:0"), IPv6Address("::1:0:0:2"))
    sets = nftsets.contents("prefixes", [LB, web], {A: 60})
    assert sets["lb"] == (
        (IPv6Network("2001:db8:a:0:1::/127"), 60),
        (IPv6Network("2001:db8:a:0:1::2/128"), 60),
        (IPv6Network("2001:db8:a:0:f000::/68"), 60),
    )


def test_a_prefix_inside_another_is_folded_into_it_with_the_longer_timeout() -> None:
    outer = IPv6Network("2001:db8:a::/56")
    assert nftsets.folded([(A, 900), (outer, 300), (B, 60)]) == ((outer, 900), (B, 60))


def test_a_delegated_prefix_and_a_subnet_of_it_give_one_element_per_set() -> None:
    """nft refuses overlapping elements in an interval set ("conflicting intervals"): the whole
    transaction would fail, so a /56 on the WAN and its /64 on the LAN must become one element."""
    delegated = IPv6Network("2001:db8:a::/56")
    sets = nftsets.contents("prefixes", [LB], {delegated: 3600, A: 600})
    assert sets["prefixes"] == ((delegated, 3600),)
    assert sets["lb"] == ((IPv6Network("2001:db8:a:0:f000::/68"), 3600),)  # the same suffix in both


networks = st.builds(
    lambda base, length: IPv6Network((IPv6Address(0x20010DB8 << 96 | base << 64), length), strict=False),
    st.integers(0, 255), st.integers(48, 64),
)  # fmt: skip


@given(st.lists(st.tuples(networks, st.integers(1, MAX_TIMEOUT)), max_size=12))
def test_folded_elements_never_overlap_and_cover_the_same_addresses(elements: list[nftsets.Element]) -> None:
    out = nftsets.folded(elements)
    nets = [n for n, _ in out]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    for net, timeout in elements:
        holder = [(n, t) for n, t in out if net.subnet_of(n)]
        assert len(holder) == 1 and holder[0][1] >= timeout
    assert all(any(n == e for e, _ in elements) for n in nets)


# -- what is written -----------------------------------------------------------------------


def test_the_script_declares_then_replaces_every_set_in_one_transaction() -> None:
    sets = nftsets.contents("prefixes", [LB], {A: 600, B: 3600})
    assert nftsets.script("dynamic_prefix", sets) == (
        "table inet dynamic_prefix {\n"
        "\tset prefixes {\n\t\ttype ipv6_addr\n\t\tflags interval, timeout\n\t}\n"
        "\tset lb {\n\t\ttype ipv6_addr\n\t\tflags interval, timeout\n\t}\n"
        "}\n"
        "flush set inet dynamic_prefix prefixes\n"
        "add element inet dynamic_prefix prefixes { 2001:db8:a::/64 timeout 600s, 2001:db8:b::/64 timeout 3600s }\n"
        "flush set inet dynamic_prefix lb\n"
        "add element inet dynamic_prefix lb "
        "{ 2001:db8:a:0:f000::/68 timeout 600s, 2001:db8:b:0:f000::/68 timeout 3600s }\n"
    )


def test_an_empty_set_is_flushed_and_not_filled_and_without_fill_only_declared() -> None:
    sets = nftsets.contents("prefixes", [LB], {})
    script = nftsets.script("t", sets)
    assert "flush set inet t prefixes\n" in script and "flush set inet t lb\n" in script
    assert "add element" not in script
    declared = nftsets.script("t", sets, fill=False)
    assert "flush" not in declared and declared.startswith("table inet t {")


def test_a_loadfile_lists_one_network_per_line_after_a_comment() -> None:
    text = nftsets.loadfile("dp_lb", ((A, 600), (B, 60)))
    lines = text.splitlines()
    assert lines[0].startswith("# ")  # fw4 skips lines starting with '#'
    assert lines[1:] == ["2001:db8:a::/64", "2001:db8:b::/64"]


# -- the [nftables] section -----------------------------------------------------------------


def nft_config(**section: object) -> cfgmod.Config:
    return cfgmod.parse({"interface": [{"name": "eth0"}], "nftables": section})


def test_the_section_defaults_to_routerds_own_table() -> None:
    n = nft_config().nftables
    assert n is not None and (n.mode, n.table, n.prefix_set, n.ranges) == (
        "table",
        "dynamic_prefix",
        "prefixes",
        (),
    )


def test_a_range_is_read_from_nftables_range_tables() -> None:
    n = nft_config(range=[{"set": "lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}]).nftables
    assert n is not None and n.ranges[0].set == "lb" and n.ranges[0].start == IPv6Address("::f000:0:0:0")


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"range": [{"set": "lb", "start": "1::", "end": "::ffff"}]},
         "nftables.range.0: Value error, start 1:: sets bits above the last 64"),
        ({"range": [{"set": "lb", "start": "::2", "end": "::1"}]}, "start ::2 is after end ::1"),
        ({"range": [{"set": "prefixes", "start": "::1", "end": "::2"}]}, "like prefix_set: give it its own name"),
        ({"interfaces": ["eth1"]}, "names eth1, which no [[interface]] watches"),
        ({"table": "bad name"}, "nftables.table: String should match pattern"),
        ({"mode": "iptables"}, "nftables.mode: Input should be 'table' or 'fw4'"),
    ],
)  # fmt: skip
def test_bad_nftables_settings_are_refused_naming_the_key(section: dict[str, object], says: str) -> None:
    with pytest.raises(cfgmod.ConfigError) as e:
        nft_config(**section)
    assert says in str(e.value)


# -- the sink where nftables cannot run -----------------------------------------------------


async def settle(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``condition`` (the sink's record: it has no event to wait on) for up to ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def test_nft_missing_is_reported_with_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without nft: the real situation on a host lacking it

    async def scenario() -> NftSink:
        sink = NftSink(cfgmod.NftablesSection())
        await sink.start()
        sink.publish(state(prefix(A, PrefixStatus.PREFERRED, 600, 300)))
        await settle(lambda: sink.delivery.last_error is not None)
        await sink.stop()
        return sink

    sink = asyncio.run(scenario())
    assert sink.delivery.last_success is None and sink.queued() == 1
    assert "nft is not installed or not on PATH (Debian/Ubuntu: apt install nftables" in str(
        sink.delivery.last_error
    )
    problem = sink.delivery.problem(0.0, 300.0, 0.0)
    assert problem is not None and problem.startswith("table inet dynamic_prefix: the sets were not written")


FAKE_FW4 = """#!/bin/sh
# A stand-in for OpenWrt's /sbin/fw4, which cannot run here (it needs ucode, ubus and OpenWrt's
# UCI): it records how it was called and the loadfiles it would read, and fails when told to.
{{ echo "argv: $*"; for f in {dir}/*.txt; do echo "== $f"; cat "$f"; done; }} >> {log}
if [ -e {fail} ]; then echo "Error: the fake fw4 was told to fail" >&2; exit 1; fi
"""


def test_fw4_mode_rewrites_the_loadfiles_then_reloads_the_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fw4 itself is not available here: a stand-in records the command and the loadfiles it would read."""
    bin_dir, files, log, fail = tmp_path / "bin", tmp_path / "sets", tmp_path / "fw4.log", tmp_path / "fail"
    bin_dir.mkdir()
    fake = bin_dir / "fw4"
    fake.write_text(FAKE_FW4.format(dir=files, log=log, fail=fail))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = cfgmod.NftablesSection.model_validate({
        "mode": "fw4", "prefix_set": "dp_prefixes", "loadfile_dir": str(files),
        "range": [{"set": "dp_lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"}],
    })  # fmt: skip
    renumbering = state(prefix(B, PrefixStatus.PREFERRED, 3600, 1800), prefix(A, PrefixStatus.DEPRECATED, 600),
                        prefix(C, PrefixStatus.WITHDRAWN, 0))  # fmt: skip
    after = state(prefix(B, PrefixStatus.PREFERRED, 3600, 1800), prefix(A, PrefixStatus.WITHDRAWN, 0))

    async def scenario() -> NftSink:
        sink = NftSink(cfg)
        await sink.start()
        sink.publish(renumbering)
        await settle(lambda: sink.delivery.last_success is not None)
        sink.publish(renumbering)  # a heartbeat: nothing changed, fw4 is not run again
        await settle(lambda: sink.queued() == 0)
        fail.touch()
        sink.publish(after)
        await settle(lambda: sink.delivery.last_error is not None)
        fail.unlink()  # the next retry (backoff, 0.5 to 1 s) goes through
        await settle(lambda: sink.queued() == 0 and log.read_text().count("argv:") == 3)
        await sink.stop()
        return sink

    sink = asyncio.run(scenario())
    calls = log.read_text().split("argv: ")[1:]
    assert [c.splitlines()[0] for c in calls] == ["-q reload-sets"] * 3
    assert calls[0].splitlines()[1:] == [
        f"== {files}/dp_lb.txt", "# routerd: the elements of the fw4 set dp_lb; rewritten on every change, do not edit",
        "2001:db8:a:0:f000::/68", "2001:db8:b:0:f000::/68",
        f"== {files}/dp_prefixes.txt", "# routerd: the elements of the fw4 set dp_prefixes; rewritten on every change, "
        "do not edit", "2001:db8:a::/64", "2001:db8:b::/64",
    ]  # fmt: skip
    assert calls[2].splitlines()[1:] == [
        f"== {files}/dp_lb.txt", "# routerd: the elements of the fw4 set dp_lb; rewritten on every change, do not edit",
        "2001:db8:b:0:f000::/68",
        f"== {files}/dp_prefixes.txt", "# routerd: the elements of the fw4 set dp_prefixes; rewritten on every change, "
        "do not edit", "2001:db8:b::/64",
    ]  # fmt: skip
    assert "the fw4 sets were not reloaded" in str(sink.delivery.last_error)
    assert "Error: the fake fw4 was told to fail" in str(sink.delivery.last_error)
    assert sink.delivery.problem(0.0, 300.0, 0.0) is None  # delivered after the failure


# -- OpenWrt: /etc/config/routerd and the firewall snippet ----------------------------------

OPENWRT = Path(__file__).resolve().parents[2] / "contrib" / "openwrt"


def test_uci_sections_map_onto_the_nftables_keys(tmp_path: Path) -> None:
    uci = tmp_path / "routerd"
    uci.write_text("""
config interface
	option name 'br-lan'
config nftables
	option mode 'fw4'
	option prefix_set 'dp_prefixes'
config nftables_range
	option set 'dp_lb'
	option start '::f000:0:0:0'
	option end '::ffff:ffff:ffff:ffff'
config nftables_range
	option set 'dp_lb'
	option start '::1:0:0:0'
	option end '::1:0:0:ff'
""")  # fmt: skip
    toml = cfgmod.parse({
        "interface": [{"name": "br-lan"}],
        "nftables": {"mode": "fw4", "prefix_set": "dp_prefixes", "range": [
            {"set": "dp_lb", "start": "::f000:0:0:0", "end": "::ffff:ffff:ffff:ffff"},
            {"set": "dp_lb", "start": "::1:0:0:0", "end": "::1:0:0:ff"},
        ]},
    })  # fmt: skip
    assert cfgmod.load(uci) == toml


def test_the_shipped_files_name_the_same_sets_and_loadfiles(tmp_path: Path) -> None:
    shipped = (OPENWRT / "files" / "routerd.config").read_text()
    assert cfgmod.load(OPENWRT / "files" / "routerd.config").nftables is None  # it ships off, ranges too
    turned_on = tmp_path / "routerd"
    turned_on.write_text(shipped.replace("config nftables\n\toption enabled '0'\n", "config nftables\n"))
    n = cfgmod.load(turned_on).nftables
    assert n is not None and n.mode == "fw4"
    want = {name: f"{n.loadfile_dir}/{name}.txt" for name in [n.prefix_set, *(r.set for r in n.ranges)]}
    ipsets: dict[str, str] = {}
    name = None
    for line in (OPENWRT / "firewall.ipset").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words[:2] == ["config", "ipset"] or (words and words[0] == "config"):
            name = None
        elif words[:2] == ["option", "name"]:
            name = words[2].strip("'")
        elif words[:2] == ["option", "loadfile"] and name:
            ipsets[name] = words[2].strip("'")
    assert ipsets == want


# -- docs/nftables.md shows what the code does -----------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "nftables.md"


def doc_blocks() -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)


def uncommented(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_documented_transaction_is_what_routerd_writes_for_the_documented_config() -> None:
    toml = next(b for b in doc_blocks() if b.startswith("[[interface]]"))
    n = cfgmod.parse(tomllib.loads(toml)).nftables
    assert n is not None
    ranges = [RangeSet(r.set, r.start, r.end) for r in n.ranges]
    written = nftsets.script(n.table, nftsets.contents(n.prefix_set, ranges, {A: 600, B: 3600}))
    assert written in doc_blocks()


def test_the_documented_uci_is_what_contrib_openwrt_ships() -> None:
    firewall = uncommented((OPENWRT / "firewall.ipset").read_text())
    routerd = uncommented((OPENWRT / "files" / "routerd.config").read_text())
    shown = [b for b in doc_blocks() if b.startswith("config ")]
    assert len(shown) == 2
    assert uncommented(shown[0]) == firewall
    lines = uncommented(shown[1])
    start = routerd.index("config nftables")
    assert [x for x in routerd[start:] if "option enabled" not in x] == lines
