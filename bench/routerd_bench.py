"""routerd benchmarks: per-RA cost in the core, RA-on-the-wire -> MQTT latency, footprint, nftables.

Runs real routerd in a network lab with a real Mosquitto (needs root, radvd
not required: RAs are injected). Reports numbers; asserts nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from bench.common import cpu_percent_over, cpu_seconds, open_fds, rss_mb, summary_ms
from routerd.cli import control_request
from routerd.core import nftsets, ra
from routerd.core.tracker import RAObserved, Tracker
from tests.ground.mosquitto import Mosquitto
from tests.ground.mqttclient import Subscriber
from tests.ground.netlab import Lab, RASender, inside
from tests.ground.routerd_proc import Routerd, routerd_toml

A = IPv6Network("2001:db8:a::/64")
B = IPv6Network("2001:db8:b::/64")


def flip(i: int) -> tuple[bytes, IPv6Network]:
    """An RA that makes A or B the preferred prefix (the other deprecated): every one is a change."""
    cur, old = (A, B) if i % 2 == 0 else (B, A)
    adv = ra.RouterAdvertisement(
        options=(ra.PrefixInformation(cur, 86400, 14400), ra.PrefixInformation(old, 86400, 0))
    )
    return adv.pack(), cur


def first(payload: bytes) -> str | None:
    prefixes = json.loads(payload)["prefixes"]
    return str(prefixes[0]["prefix"]) if prefixes else None


def core_per_ra(n: int = 10_000) -> dict[str, Any]:
    """accept() + tracker.observe() per RA, in process, half refreshes and half changes."""
    packets = [flip(i // 2)[0] for i in range(n)]
    src = IPv6Address("fe80::1")
    t = Tracker()
    start = time.perf_counter()
    for i, p in enumerate(packets):
        adv = ra.accept(p, hop_limit=255, source=src)
        t.observe(RAObserved("eth0", src, adv.preference, adv.prefixes), float(i))
    elapsed = time.perf_counter() - start
    return {"ras": n, "us_per_ra": round(elapsed / n * 1e6, 2)}


def status(path: Path) -> dict[str, Any]:
    """The running routerd's counters, from its control socket."""
    return control_request(path, {"op": "status"})


def paced(sender: RASender, pid: int, packet: bytes, rate: float, seconds: float) -> dict[str, Any]:
    """Send ``packet`` at a steady ``rate`` per second for ``seconds``; routerd's CPU meanwhile."""
    n = int(rate * seconds)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sender.send(packet)
    elapsed = time.monotonic() - t0
    return {
        "ras": n,
        "achieved_per_s": round(n / elapsed, 1),
        "routerd_cpu_percent": round((cpu_seconds(pid) - cpu0) / elapsed * 100, 2),
        "rss_mb": rss_mb(pid),
    }


@contextlib.contextmanager
def routerd_in_lab(
    workdir: Path, mosquitto_bin: str, passwd_bin: str, python: str | None = None, extra: str = ""
) -> Iterator[tuple[Lab, Routerd, Subscriber, Path]]:
    """Mosquitto, a lab and routerd (MQTT sink, ``hold_down = 0``, and ``extra`` configuration)
    with a first prefix published."""
    broker = Mosquitto(workdir / "mqtt", mosquitto_bin, passwd_bin)
    broker.start()
    lab = Lab(workdir / "lab").create()
    try:
        lab.forward(broker.plain_port)
        ctl = workdir / "ctl.sock"
        r = Routerd(lab, workdir / "routerd", routerd_toml(
            lab.host_if, router_id="bench", hold_down=0, stdout=False, mqtt_port=broker.plain_port,
            control_socket=ctl) + extra, python=python)  # fmt: skip
        topic = f"dynamic-prefix/bench/{lab.host_if}/state"
        with Subscriber(broker.plain_port, topic) as sub:
            sub.wait_for(timeout=20)  # routerd is up: its initial (empty) state arrived
            lab.inject_ra(flip(1)[0])
            sub.wait_for(lambda m: first(m.payload) is not None, timeout=20)
            time.sleep(0.5)
            yield lab, r, sub, ctl
        r.stop()
    finally:
        lab.destroy()
        broker.stop()


FLOOD_WINDOW = 64  # RAs sent and not yet taken by routerd, at most


def flood(sender: RASender, pid: int, ctl: Path, packet: bytes, n: int) -> dict[str, Any]:
    """Send ``n`` copies of ``packet`` as fast as routerd takes them.

    One socket sends far faster than routerd reads, and what overflows
    routerd's socket buffer the kernel drops; so at most ``FLOOD_WINDOW`` RAs
    are in flight, and routerd's count of accepted RAs (its control socket)
    says when to send more. The rate is routerd's, not the sender's.
    """
    before = status(ctl)["ras_accepted"]
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    sent = taken = polls = 0
    while taken < n:
        while sent < n and sent - taken < FLOOD_WINDOW:
            sender.send(packet)
            sent += 1
        time.sleep(0.002)
        taken = status(ctl)["ras_accepted"] - before
        polls += 1
        if time.monotonic() - t0 > 120:
            raise TimeoutError(f"routerd took {taken} of {sent} RAs within 120 s (lost on the way?)")
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    return {
        "ras": n,
        "accepted": taken,
        "seconds": round(elapsed, 2),
        "per_s": round(n / elapsed),
        "status_polls": polls,
        "routerd_cpu_seconds": round(cpu, 2),
        "routerd_cpu_us_per_ra": round(cpu / n * 1e6, 1),
    }


def lab_run(
    workdir: Path,
    mosquitto_bin: str,
    passwd_bin: str,
    changes: int = 200,
    flood_ras: int = 10_000,
    idle_seconds: float = 60.0,
    paced_seconds: float = 30.0,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with routerd_in_lab(workdir, mosquitto_bin, passwd_bin) as (lab, r, sub, ctl):
        out["rss_after_start_mb"] = rss_mb(r.proc.pid)
        out["rss_anon_after_start_mb"] = rss_mb(r.proc.pid, "RssAnon")
        out["idle"] = {
            "seconds": idle_seconds,
            "routerd_cpu_percent": cpu_percent_over(r.proc.pid, idle_seconds),
        }
        lat = []
        sub.history.clear()
        with lab.ra_sender() as sender:
            for i in range(changes):
                packet, cur = flip(i)
                t0 = time.monotonic()
                sender.send(packet)
                got = sub.wait_for(lambda m, c=str(cur), t=t0: m.at >= t and first(m.payload) == c, timeout=5)
                lat.append(got.at - t0)
                sub.history.clear()
            out["ra_to_mqtt"] = summary_ms(lat)
            packet, _ = flip(changes)  # the current state again: refreshes only
            out["flood"] = flood(sender, r.proc.pid, ctl, packet, flood_ras)
            out["rss_after_flood_mb"] = rss_mb(r.proc.pid)
            out["at_100_ras_per_s"] = paced(sender, r.proc.pid, packet, 100.0, paced_seconds)
        out["open_fds"] = open_fds(r.proc.pid)
    return out


VERSIONS_PROBE = (
    "import json, paho.mqtt, pydantic, sys; "
    "print(json.dumps({'python': sys.version.split()[0], 'paho-mqtt': paho.mqtt.__version__, "
    "'pydantic': pydantic.VERSION}))"
)


def footprint(workdir: Path, mosquitto_bin: str, passwd_bin: str, python: str, ras: int) -> dict[str, Any]:
    """routerd's RSS under another interpreter (OpenWrt's feed versions): after start and after ``ras`` RAs.

    routerd itself comes from this checkout (``python -m routerd`` from the
    working directory, as ``python -m bench`` needs), its dependencies from
    ``python``'s environment.
    """
    probe = subprocess.run(
        [python, "-c", VERSIONS_PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    out: dict[str, Any] = {"versions": json.loads(probe.stdout)}
    with routerd_in_lab(workdir, mosquitto_bin, passwd_bin, python=python) as (lab, r, _, ctl):
        out["rss_after_start_mb"] = rss_mb(r.proc.pid)
        out["rss_anon_after_start_mb"] = rss_mb(r.proc.pid, "RssAnon")
        with lab.ra_sender() as sender:
            out["ras"] = flood(sender, r.proc.pid, ctl, flip(1)[0], ras)["accepted"]
        out["rss_after_ras_mb"] = rss_mb(r.proc.pid)
    return out


NFT_SECTION = """
[nftables]
[[nftables.range]]
set = "lb"
start = "::f000:0:0:0"
end = "::ffff:ffff:ffff:ffff"
"""
LIBNFTABLES = "libnftables.so.1"
LIBNFTABLES_PROBE = """
import ctypes, sys
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
before = rss()
lib = ctypes.CDLL("libnftables.so.1")
lib.nft_ctx_new.restype = ctypes.c_void_p
lib.nft_ctx_buffer_output.argtypes = lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
ctx = lib.nft_ctx_new(0)
lib.nft_ctx_buffer_output(ctx); lib.nft_ctx_buffer_error(ctx)
rc = lib.nft_run_cmd_from_buffer(ctx, sys.stdin.read().encode())
print(rc, before, rss())
"""


def nft_script() -> str:
    """What the sink writes during a renumbering: two prefixes and their load-balancer ranges."""
    ranges = [nftsets.RangeSet("lb", IPv6Address("::f000:0:0:0"), IPv6Address("::ffff:ffff:ffff:ffff"))]
    return nftsets.script("bench", nftsets.contents("prefixes", ranges, {A: 600, B: 3600}))


def nft_transactions(netns: str, n: int) -> dict[str, Any]:
    """One transaction through ``nft -f -`` (a child process, as the sink runs it) and through
    libnftables in process (ctypes), each timed alone, in ``netns``; and what libnftables adds to RSS."""
    script = nft_script()
    spawned, in_process = [], []
    with inside(netns):  # this thread's namespace, which the child nft inherits
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)
            spawned.append(time.perf_counter() - t0)
        lib = ctypes.CDLL(LIBNFTABLES)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_buffer_output.argtypes = lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        buffer = script.encode()
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                if lib.nft_run_cmd_from_buffer(ctx, buffer) != 0:
                    raise RuntimeError("libnftables refused the transaction")
                in_process.append(time.perf_counter() - t0)
        finally:
            lib.nft_ctx_free(ctx)
    probe = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", LIBNFTABLES_PROBE],
                           input=script, capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    rc, before, after = (int(x) for x in probe.stdout.split())
    return {
        "transactions": n,
        "nft_f_spawned_ms": summary_ms(spawned),
        "libnftables_ctypes_ms": summary_ms(in_process),
        "libnftables_rss_added_mb": round((after - before) / 1024, 1) if rc == 0 else None,
    }


def nft_sink(workdir: Path, mosquitto_bin: str, passwd_bin: str, changes: int) -> dict[str, Any]:
    """routerd's RSS with the nftables sink on (besides MQTT, as in the lab run), after start and after
    ``changes`` prefix changes, each written to the sets; and the cost of one transaction both ways."""
    out: dict[str, Any] = {}
    with routerd_in_lab(workdir / "without", mosquitto_bin, passwd_bin) as (_, r, _, _):
        out["without_nft_rss_after_start_mb"] = rss_mb(r.proc.pid)
        out["without_nft_rss_anon_after_start_mb"] = rss_mb(r.proc.pid, "RssAnon")
    with routerd_in_lab(workdir / "with", mosquitto_bin, passwd_bin, extra=NFT_SECTION) as (lab, r, sub, ctl):
        out["rss_after_start_mb"] = rss_mb(r.proc.pid)
        out["rss_anon_after_start_mb"] = rss_mb(r.proc.pid, "RssAnon")
        with lab.ra_sender() as sender:
            for i in range(changes):
                packet, cur = flip(i)
                sender.send(packet)
                sub.wait_for(lambda m, c=str(cur): first(m.payload) == c, timeout=5)
                sub.history.clear()
        deadline = time.monotonic() + 10
        while (sink := next(s for s in status(ctl)["sinks"] if s["name"] == "nftables"))["queued"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the nftables sink did not catch up: {sink}")
            time.sleep(0.05)
        out["sink_ok"] = sink["ok"]
        out["changes"] = changes
        out["rss_after_changes_mb"] = rss_mb(r.proc.pid)
        out["open_fds"] = open_fds(r.proc.pid)
        out["transaction"] = nft_transactions(lab.router, max(changes, 10))
    return out
