"""routerd's asyncio main loop: wires sources and sinks to the core.

Event driven: the raw sockets and the netlink socket are read when the kernel
says they are readable; one timer is set for the earliest moment the tracker
or the emitter has something to do (an expiry, a coalesced change, a
heartbeat). Nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv6Interface
from pathlib import Path
from typing import Any, Protocol

from routerd import config as cfgmod
from routerd.adapters import sdnotify
from routerd.adapters.delivery import Delivery
from routerd.adapters.netlink import LinkEvent, NetlinkMonitor, to_event
from routerd.adapters.rawsock import RASocket
from routerd.adapters.routes import default_route_interface
from routerd.adapters.stdout import StdoutSink
from routerd.core import dhcpv6, ra
from routerd.core.emitter import Emitter, message
from routerd.core.sequence import SequenceAllocator
from routerd.core.tracker import (
    UNIQUE_LOCAL,
    AddressObserved,
    AddressRemoved,
    Delegated,
    InterfaceRemoved,
    Observation,
    RAObserved,
    Tracker,
    Update,
)
from routerd.core.wire import PrefixState, timestamp
from routerd.logs import RateLimited, kv

LOG = logging.getLogger("routerd")
RS_ATTEMPTS = 4
"""Router Solicitations tried when a link comes up before its link-local address is usable."""
RS_RETRY = 1.0
DELIVERY_SLACK = 30.0
"""Seconds beyond a heartbeat (and the hold-down) a sink may take to deliver before status says not ok."""


class Sink(Protocol):
    name: str
    delivery: Delivery

    async def start(self) -> None: ...

    def publish(self, msg: PrefixState) -> None: ...

    def queued(self) -> int: ...

    async def stop(self) -> None: ...


def resolve_interfaces(cfg: cfgmod.Config) -> list[cfgmod.InterfaceSection]:
    """The configured interfaces, else the default-route interface."""
    if cfg.interface:
        return list(cfg.interface)
    name = default_route_interface()
    if name is None:
        raise cfgmod.ConfigError(
            "no default route on this host, so no interface to watch; name one with --interface"
        )
    return [cfgmod.InterfaceSection(name=name)]


def missing_interfaces(interfaces: list[cfgmod.InterfaceSection]) -> str | None:
    """None when every interface exists, else a sentence naming the missing ones and those that do."""
    here = [name for _, name in socket.if_nameindex()]
    missing = [i.name for i in interfaces if i.name not in here]
    if not missing:
        return None
    which = (
        f"interface {missing[0]} does not" if len(missing) == 1 else f"interfaces {', '.join(missing)} do not"
    )
    return f"{which} exist; this host has: {', '.join(here)}"


def build_sinks(cfg: cfgmod.Config) -> list[Sink]:
    """Every configured sink, ready to start: secrets read, CA files loaded, nothing connected yet."""
    sinks: list[Sink] = []
    if cfg.stdout_enabled:
        sinks.append(StdoutSink())
    if cfg.mqtt is not None:
        try:
            from routerd.adapters.mqtt import MQTTSink
        except ModuleNotFoundError as e:
            raise cfgmod.ConfigError(
                f"the [mqtt] sink needs the Python module {e.name}: pip install paho-mqtt "
                "(OpenWrt: opkg install python3-paho-mqtt)"
            ) from None
        sinks.append(MQTTSink(cfg.mqtt, cfg.router_id, cfg.mqtt.password()))
    for i, w in enumerate(cfg.webhook):
        from routerd.adapters.webhook import WebhookSink

        sinks.append(WebhookSink(w, w.secret(), setting=f"webhook.{i}"))
    for i, x in enumerate(cfg.exec):
        from routerd.adapters.exec_hook import ExecSink

        sinks.append(ExecSink(x, setting=f"exec.{i}"))
    if cfg.nftables is not None:
        from routerd.adapters.nft import NftSink

        sinks.append(NftSink(cfg.nftables))
    return sinks


def sink_summary(cfg: cfgmod.Config) -> str:
    """Where states go, in one line: 'publishing to mqtts://broker.lan:8883 as routerd (...); webhook off; ...'."""
    on: list[str] = []
    off: list[str] = []
    if cfg.mqtt is not None:
        m = cfg.mqtt
        topic = f"{m.base_topic.rstrip('/')}/{cfg.router_id}/<interface>/state"
        on.append(f"mqtt{'s' if m.tls else ''}://{m.host}:{m.effective_port} as {m.username or 'anonymous'} "
                  f"({topic})")  # fmt: skip
    else:
        off.append("mqtt off")
    on += [f"webhook {w.url}" for w in cfg.webhook]
    if not cfg.webhook:
        off.append("webhook off")
    on += [f"exec {shlex.join(x.command)}" for x in cfg.exec]
    if cfg.nftables is not None:
        n = cfg.nftables
        on.append(
            f"nftables sets in table inet {n.table}"
            if n.mode == "table"
            else f"fw4 sets via {n.loadfile_dir}"
        )
    if cfg.stdout_enabled:
        on.append("stdout")
    else:
        off.append("stdout off")
    if not on:
        return "publishing nowhere: " + "; ".join(off) + " (configure a sink, or set [stdout] enabled = true)"
    return "publishing to " + ", ".join(on) + "".join(f"; {o}" for o in off)


def _writable_dir(candidates: list[Path]) -> Path:
    for d in candidates:
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise cfgmod.ConfigError(f"none of {', '.join(map(str, candidates))} is writable; set state_dir")


def state_dir(cfg: cfgmod.Config) -> Path:
    if cfg.state_dir is not None:
        return _writable_dir([cfg.state_dir])
    if os.environ.get("STATE_DIRECTORY"):  # systemd's StateDirectory= (DynamicUser)
        return _writable_dir([Path(os.environ["STATE_DIRECTORY"].split(":")[0])])
    home_state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return _writable_dir([Path("/var/lib/routerd"), home_state / "routerd"])


def control_path(cfg: cfgmod.Config, state: Path | None = None) -> Path:
    """Where the control socket is; the state directory (made if missing) is only the last resort."""
    if cfg.control_socket is not None:
        return cfg.control_socket
    if os.environ.get("RUNTIME_DIRECTORY"):  # systemd's RuntimeDirectory= (DynamicUser)
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "control.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if os.geteuid() == 0:
        return Path("/run/routerd/control.sock")
    if runtime:
        return Path(runtime) / "routerd.sock"
    return (state or state_dir(cfg)) / "control.sock"


class SequenceStore:
    """The persisted sequence reservation (one small atomic write per block)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "sequence"

    def load(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            LOG.warning(f"ignoring unreadable {self.path} ({e}); the wall clock seeds the sequence")
            return None

    def save(self, value: int) -> None:
        """Persist ``value`` so that neither a crash nor a power cut brings back an older one."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # The rename is an entry in the directory: until the directory is synced, a power cut
        # can bring back the old file, and with it sequences already published.
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@dataclass
class Stats:
    ras_accepted: int = 0
    published: int = 0


class Daemon:
    """One routerd process: sources -> tracker -> emitter -> sinks."""

    def __init__(
        self,
        cfg: cfgmod.Config,
        *,
        config_path: Path | None = None,
        once: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.once = once
        self.boot = secrets.token_hex(8)
        self.tracker = Tracker(cfg.tracker.tracker_config())
        self.emitter = Emitter(cfg.publish.policy())
        self.latest: dict[str, PrefixState] = {}
        self.limited = RateLimited(LOG)
        self.stats = Stats()
        self.sinks: list[Sink] = []
        self.interfaces: list[cfgmod.InterfaceSection] = []
        self._names: dict[int, str] = {}
        self._addresses: dict[str, dict[IPv6Interface, AddressObserved]] = {}
        """The kernel's global addresses per watched interface, to say why one is not counted."""
        self._started = 0.0
        self._ra: dict[str, RASocket] = {}
        self._netlink: NetlinkMonitor | None = None
        self._control: asyncio.AbstractServer | None = None
        self._control_path: Path | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._initial_due: float | None = None
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store: SequenceStore | None = None
        self.seq: SequenceAllocator | None = None

    # -- life cycle --------------------------------------------------------------------

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        directory = state_dir(self.cfg)
        self.store = SequenceStore(directory)
        self.seq = SequenceAllocator.resume(self.store.load(), int(time.time() * 1000))
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stop.set)
        self._loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        await self._open(directory)
        sdnotify.notify("READY=1")
        self._status()
        self._start_watchdog()
        if self.once is not None:
            self._loop.call_later(self.once, self._stop.set)
        await self._stop.wait()
        if self.once is not None:
            out = StdoutSink()
            for iface in self._watched_names():
                self._publish(iface, self.now())
                out.publish(self.latest[iface])
        sdnotify.notify("STOPPING=1")
        await self._close()
        return 0

    def stop(self) -> None:
        self._stop.set()

    async def _open(self, directory: Path, sinks: list[Sink] | None = None) -> None:
        self.interfaces = resolve_interfaces(self.cfg)
        if not self.cfg.interface:
            LOG.info("watching the default-route interface", extra=kv(interface=self.interfaces[0].name))
        missing = missing_interfaces(self.interfaces)
        if missing and self.once is not None:
            raise cfgmod.ConfigError(f"{missing}; name an existing one with --interface")
        if missing:
            LOG.warning(f"{missing}; waiting for it to appear")
        if sinks is None:
            sinks = [] if self.once is not None else build_sinks(self.cfg)  # `once` prints at the end
        self.sinks = sinks
        if self.once is None:
            LOG.info(sink_summary(self.cfg))
        self._started = self.now()
        for s in self.sinks:
            await s.start()
        self._open_netlink()
        for i in self.interfaces:
            if i.ra and self._exists(i.name):
                self._open_ra(i.name)
        for name in self._watched_names():
            uncounted = self.uncounted(name)
            if uncounted and not self.tracker.view(name, self.now()):
                LOG.warning(f"no prefix counted on {name} yet; not counting {', '.join(uncounted)}",
                            extra=kv(interface=name))  # fmt: skip
        if self.once is None:
            await self._open_control(control_path(self.cfg, directory))
            # Publish each watched interface once even if nothing arrives (a host with no IPv6).
            self._initial_due = self.now() + 1.0
            self._reschedule()

    async def _close(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._watchdog:
            self._watchdog.cancel()
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            if self._control_path is not None:
                with contextlib.suppress(OSError):
                    self._control_path.unlink()
            self._control = None
        assert self._loop is not None
        for name in list(self._ra):
            self._close_ra(name)
        if self._netlink is not None:
            self._loop.remove_reader(self._netlink.fileno())
            self._netlink.close()
            self._netlink = None
        for s in self.sinks:
            try:
                await s.stop()
            except Exception:
                LOG.exception(f"{s.name} sink did not stop cleanly")

    async def reload(self) -> None:
        """SIGHUP: re-read the configuration; on error keep running as before."""
        if self.config_path is None:
            LOG.info("SIGHUP: no configuration file to reload (running on the embedded default)")
            return
        try:
            new = cfgmod.load(self.config_path)
            sinks = build_sinks(new)  # its secrets and CA files, before anything running is closed
        except cfgmod.ConfigError as e:
            LOG.error(f"SIGHUP: keeping the running configuration: {e}")
            return
        LOG.info("SIGHUP: reloading the configuration", extra=kv(path=str(self.config_path)))
        await self._close()
        self.cfg = new
        self.tracker = Tracker(new.tracker.tracker_config())
        self.emitter = Emitter(new.publish.policy())
        assert self.store is not None
        await self._open(self.store.path.parent, sinks)

    # -- configuration ---------------------------------------------------------------------

    def _watched_names(self) -> list[str]:
        return [i.name for i in self.interfaces]

    @staticmethod
    def _exists(name: str) -> bool:
        try:
            socket.if_nametoindex(name)
        except OSError:
            return False
        return True

    def uncounted(self, iface: str) -> list[str]:
        """Addresses on ``iface`` the configuration leaves out, each with the key that counts it."""
        notes = []
        for a in sorted(self._addresses.get(iface, {}).values(), key=lambda a: a.address):
            why = []
            if a.address.network.subnet_of(UNIQUE_LOCAL) and not self.cfg.tracker.allow_ula:
                why.append(("unique-local", "tracker.allow_ula"))
            if a.permanent and not self.cfg.tracker.include_static:
                why.append(("static", "tracker.include_static"))
            if why:
                kinds = " and ".join(k for k, _ in why)
                keys = " and ".join(f"{key} = true" for _, key in why)
                notes.append(f"{a.address} ({kinds}: set {keys} to count it)")
        return notes

    # -- sources -------------------------------------------------------------------------

    def _open_netlink(self) -> None:
        """Addresses of the netlink interfaces, and link events for all (an RA socket opens when its link does)."""
        if not self.interfaces:
            return
        assert self._loop is not None
        self._netlink = NetlinkMonitor()
        self._names = {}
        self._addresses = {}
        for i in self.interfaces:
            if i.netlink and self._exists(i.name):
                self._names[socket.if_nametoindex(i.name)] = i.name
        self._loop.add_reader(self._netlink.fileno(), self._on_netlink)
        self._resync()

    def _resync(self) -> None:
        """Re-read every IPv6 address from the kernel (start, a hook's nudge, lost events)."""
        if self._netlink is None:
            return
        for kind, msg in NetlinkMonitor.dump_addresses():
            self._netlink_message(kind, msg)

    def _on_netlink(self) -> None:
        assert self._netlink is not None
        try:
            for kind, msg in self._netlink.read():
                self._netlink_message(kind, msg)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            # The kernel dropped events the socket had no room for: the dump tells what they said.
            self.limited.warning(
                "netlink-overrun", "netlink events were lost (ENOBUFS); re-reading addresses"
            )
            self._resync()

    def _netlink_message(self, kind: int, msg: bytes) -> None:
        assert self._netlink is not None
        try:
            event = to_event(kind, msg, self._names, self._netlink.layout)
        except ValueError as e:  # rtnetlink.NetlinkError, or an address ipaddress refuses
            self.limited.warning("bad-netlink-message", f"undecodable netlink message type {kind}: {e}")
            return
        if event is None:
            return
        if isinstance(event, LinkEvent):
            self._on_link(event)
            return
        if isinstance(event, AddressObserved):
            self._addresses.setdefault(event.interface, {})[event.address] = event
        elif isinstance(event, AddressRemoved):
            self._addresses.get(event.interface, {}).pop(event.address, None)
        self.observe(event)

    def _on_link(self, ev: LinkEvent) -> None:
        watched = {i.name: i for i in self.interfaces}
        if ev.removed:
            name = self._names.pop(ev.index, None)
            if name is not None:
                LOG.warning("interface went away", extra=kv(interface=name))
                self._close_ra(name)
                self._addresses.pop(name, None)
                self.observe(InterfaceRemoved(name))
            return
        if ev.name in watched:
            if watched[ev.name].netlink:
                self._names[ev.index] = ev.name
            if watched[ev.name].ra and ev.name not in self._ra and ev.up:
                self._open_ra(ev.name)

    def _open_ra(self, name: str) -> None:
        assert self._loop is not None
        try:
            sock = RASocket(name)
        except PermissionError:
            self.limited.warning(
                "no-cap-net-raw",
                "cannot open a raw ICMPv6 socket (needs root or CAP_NET_RAW): "
                "RA listening is off, netlink still works",
                interface=name,
            )
            return
        except OSError as e:
            LOG.warning(f"cannot listen for RAs on {name} yet: {e.strerror or e}", extra=kv(interface=name))
            return
        self._ra[name] = sock
        self._loop.add_reader(sock.fileno(), self._on_ra_readable, name)
        self._solicit(name, sock, attempt=1)

    def _solicit(self, name: str, sock: RASocket, attempt: int) -> None:
        """Send a Router Solicitation; retried while a link that just came up has no usable
        link-local address yet (its DAD takes about a second: ENETUNREACH, EADDRNOTAVAIL)."""
        assert self._loop is not None
        if self._ra.get(name) is not sock:
            return  # closed or reopened meanwhile
        try:
            sock.solicit()
        except OSError as e:
            if attempt < RS_ATTEMPTS:
                LOG.info(f"router solicitation failed ({e.strerror or e}); retrying in {RS_RETRY}s",
                         extra=kv(interface=name))  # fmt: skip
                self._loop.call_later(RS_RETRY, self._solicit, name, sock, attempt + 1)
                return
            LOG.warning(f"router solicitation failed: {e.strerror or e}", extra=kv(interface=name))
            return
        LOG.info(f"waiting for a Router Advertisement on {name} (sent a Router Solicitation)",
                 extra=kv(interface=name))  # fmt: skip

    def _close_ra(self, name: str) -> None:
        sock = self._ra.pop(name, None)
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _on_ra_readable(self, name: str) -> None:
        sock = self._ra.get(name)
        if sock is None:
            return
        section = next(i for i in self.interfaces if i.name == name)
        while True:
            try:
                got = sock.receive()
            except OSError as e:
                LOG.warning(f"raw socket failed ({e.strerror}); reopening when the link returns",
                            extra=kv(interface=name))  # fmt: skip
                self._close_ra(name)
                return
            if got is None:
                return
            try:
                adv = ra.accept(
                    got.data,
                    hop_limit=got.hop_limit,
                    source=got.source,
                    allowed_routers=frozenset(section.allowed_routers),
                    max_prefixes=self.cfg.tracker.max_prefixes,
                )
            except ra.RAError as e:
                self.limited.warning(e.reason, f"ignored an RA: {e}", interface=name, source=str(got.source))
                continue
            self.stats.ras_accepted += 1
            for bad in adv.malformed:
                self.limited.warning(bad.reason, f"ignored an option of an RA: {bad.detail}",
                                     interface=name, source=str(got.source))  # fmt: skip
            self.observe(RAObserved(name, got.source, adv.preference, adv.prefixes))

    # -- core glue -----------------------------------------------------------------------

    def observe(self, obs: Observation) -> None:
        now = self.now()
        self._after(self.tracker.observe(obs, now), now)

    def _after(self, up: Update, now: float) -> None:
        for ig in up.ignored:
            self.limited.warning(ig.reason, f"ignored a prefix: {ig.detail}")
        for iface, prefix, change in up.changes:
            LOG.info(
                f"{prefix} {change.value}", extra=kv(interface=iface, prefix=str(prefix), change=change.value)
            )
        for iface in sorted(up.changed):
            if self.emitter.changed(iface, now):
                self._publish(iface, now)
        self._reschedule()

    def _publish(self, iface: str, now: float) -> None:
        assert self.seq is not None
        assert self.store is not None
        value, reserve = self.seq.take()
        if reserve is not None:
            try:
                self.store.save(reserve)
            except OSError as e:
                LOG.error(f"cannot persist the sequence to {self.store.path}: {e}; "
                          "a restart may repeat sequence numbers unless the clock is synced")  # fmt: skip
        msg = message(
            router=self.cfg.router_id,
            interface=iface,
            boot=self.boot,
            sequence=value,
            observed_at=timestamp(datetime.now(UTC)),
            views=self.tracker.view(iface, now),
        )
        self.latest[iface] = msg
        self.emitter.published(iface, now)
        self.stats.published += 1
        for sink in self.sinks:
            try:
                sink.publish(msg)
            except Exception:
                LOG.exception(f"{sink.name} sink failed to publish", extra=kv(interface=iface))
        self._status()

    def _reschedule(self) -> None:
        assert self._loop is not None
        now = self.now()
        candidates = [d for d in (self.tracker.next_deadline(now), self.emitter.next_deadline(),
                                  self._initial_due) if d is not None]  # fmt: skip
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if candidates:
            self._timer = self._loop.call_at(max(min(candidates), now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.now()
        self._after(self.tracker.tick(now), now)
        for iface in self.emitter.due(now):
            self._publish(iface, now)
        if self._initial_due is not None and now >= self._initial_due:
            self._initial_due = None
            for iface in self._watched_names():
                if iface not in self.latest:
                    self._publish(iface, now)
        self._reschedule()

    def _status(self) -> None:
        current = []
        for iface, msg in sorted(self.latest.items()):
            best = next((p for p in msg.prefixes if p.state.value == "preferred"), None)
            current.append(f"{iface}: {best.prefix if best else 'no prefix'}")
        sdnotify.notify("STATUS=" + ("; ".join(current) or "waiting for prefixes"))

    def _start_watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if interval is None or self._loop is None:
            return

        def ping() -> None:
            sdnotify.notify("WATCHDOG=1")
            assert self._loop is not None
            self._watchdog = self._loop.call_later(interval, ping)

        ping()

    # -- control socket (status, DHCPv6 hooks) ---------------------------------------------

    async def _open_control(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # noqa: ASYNC240 - a stale socket file, once at start
            old = os.umask(0o117)
            try:
                self._control = await asyncio.start_unix_server(self._on_control, path=str(path))
            finally:
                os.umask(old)
        except OSError as e:
            LOG.warning(
                f"no control socket at {path} ({e.strerror}): `routerd status` and hooks will not reach us"
            )
            return
        self._control_path = path

    async def _on_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            reply = self.handle_control(json.loads(line or b"{}"))
        except (ValueError, TimeoutError) as e:
            reply = {"ok": False, "error": f"bad request: {e}"}
        writer.write(json.dumps(reply, default=str).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def handle_control(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request: status, delegated, nudge."""
        op = req.get("op")
        if op == "status":
            sinks, problems = self._sink_health()
            return {
                "ok": not problems,
                "problems": problems,
                "router": self.cfg.router_id,
                "boot": self.boot,
                "interfaces": {k: json.loads(v.to_json()) for k, v in sorted(self.latest.items())},
                "not_counted": {i: n for i in self._watched_names() if (n := self.uncounted(i))},
                "sinks": sinks,
                "ras_accepted": self.stats.ras_accepted,
                "published": self.stats.published,
                "rejected": dict(self.limited.counts),
                "ra_listening": sorted(self._ra),
            }
        if op == "delegated":
            try:
                iface = str(req["interface"])
                prefixes = tuple(
                    dhcpv6.delegation(p, v, pr, f"prefixes[{i}]")
                    for i, (p, v, pr) in enumerate(req.get("prefixes", []))
                )
            except (KeyError, TypeError, ValueError) as e:
                return {"ok": False, "error": f"bad delegation: {e}"}
            LOG.info("DHCPv6 client hook", extra=kv(interface=iface, prefixes=[str(p[0]) for p in prefixes]))
            self.observe(Delegated(iface, prefixes))
            return {"ok": True}
        if op == "nudge":
            self._nudge()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}: use status, delegated or nudge"}

    def _sink_health(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Each sink's delivery record, and what is wrong: a sink that has not delivered
        within a heartbeat (plus slack), is disconnected, or failed last."""
        now = self.now()
        window = self.cfg.publish.heartbeat + self.cfg.publish.hold_down + DELIVERY_SLACK
        report: list[dict[str, Any]] = []
        problems: list[str] = []
        for s in self.sinks:
            problem = s.delivery.problem(now, window, self._started)
            report.append({"name": s.name, "ok": problem is None, **s.delivery.report(now, s.queued())})
            if problem is not None:
                problems.append(f"{s.name}: {problem}")
        if not self.sinks:
            problems.append("no sink is on: states are not published anywhere")
        return report, problems

    def _nudge(self) -> None:
        """A hook says something changed: re-read the kernel's addresses and ask routers."""
        self._resync()
        for sock in self._ra.values():
            with contextlib.suppress(OSError):
                sock.solicit()


def run(cfg: cfgmod.Config, config_path: Path | None, once: float | None = None) -> int:
    daemon = Daemon(cfg, config_path=config_path, once=once)
    return asyncio.run(daemon.run())
