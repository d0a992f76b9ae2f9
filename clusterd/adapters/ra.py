"""clusterd's own RA listener: routerd's raw socket and tracker, reporting as "router-advertisement".

Used by DynamicPrefixes with ``routerAdvertisement.enabled`` when clusterd runs
with hostNetwork and NET_RAW. The RA checks, the RFC 4862/9096 lifetime rules
and the ordering of prefixes are routerd's, so both paths agree on what the
current prefix is.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from clusterd.clock import utcnow
from clusterd.core.status import Report
from routerd.adapters.rawsock import RASocket
from routerd.core import ra
from routerd.core.emitter import message
from routerd.core.tracker import RAObserved, Tracker, TrackerConfig
from routerd.core.wire import timestamp
from routerd.logs import RateLimited, kv

LOG = logging.getLogger("clusterd.ra")
REOPEN_SECONDS = 5.0  # an interface that is missing or failed is tried again this often


class RAListener:
    def __init__(self, submit: Callable[[Report], object], allow_ula: bool) -> None:
        self._submit = submit
        self.tracker = Tracker(TrackerConfig(allow_ula=allow_ula))
        self.boot = secrets.token_hex(8)
        self._sequence = 0
        self._sockets: dict[str, RASocket] = {}
        self._limited = RateLimited(LOG)
        self._timer: asyncio.TimerHandle | None = None
        self._wanted: set[str] = set()
        self._reopen: asyncio.TimerHandle | None = None
        self.available = True

    def want(self, interfaces: set[str]) -> None:
        """Listen on exactly these interfaces (the DynamicPrefixes that enable RAs name them)."""
        loop = asyncio.get_running_loop()
        self._wanted = set(interfaces)
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        for name in set(self._sockets) - interfaces:
            self._drop(name)
        for name in interfaces - set(self._sockets):
            try:
                sock = RASocket(name)
            except PermissionError:
                self.available = False
                self._limited.warning("no-cap-net-raw", "no NET_RAW: cannot listen for RAs", interface=name)
                continue
            except OSError as e:
                self._limited.warning(
                    "ra-socket",
                    f"cannot listen for RAs on {name}: {e.strerror}; trying again",
                    interface=name,
                )
                self._retry_later()
                continue
            self._sockets[name] = sock
            loop.add_reader(sock.fileno(), self._readable, name)
            try:
                sock.solicit()
            except OSError as e:
                LOG.warning(f"router solicitation failed: {e.strerror}", extra=kv(interface=name))
            LOG.info("listening for RAs", extra=kv(interface=name))

    def _drop(self, name: str) -> None:
        sock = self._sockets.pop(name)
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()

    def _retry_later(self) -> None:
        if self._reopen is None:
            self._reopen = asyncio.get_running_loop().call_later(
                REOPEN_SECONDS, lambda: self.want(self._wanted)
            )

    def close(self) -> None:
        self.want(set())
        if self._timer is not None:
            self._timer.cancel()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _readable(self, name: str) -> None:
        sock = self._sockets.get(name)
        try:
            while sock is not None and (got := sock.receive()) is not None:
                try:
                    adv = ra.accept(got.data, hop_limit=got.hop_limit, source=got.source)
                except ra.RAError as e:
                    self._limited.warning(
                        e.reason, f"ignored an RA: {e}", interface=name, source=str(got.source)
                    )
                    continue
                up = self.tracker.observe(
                    RAObserved(name, got.source, adv.preference, adv.prefixes), self._now()
                )
                for i in up.changed:
                    self._report(i)
        except OSError as e:  # the interface went away: a reader left registered would spin
            self._limited.warning(
                "ra-socket", f"the raw socket on {name} failed ({e.strerror}); reopening", interface=name
            )
            self._drop(name)
            self._retry_later()
        self._reschedule()

    def _tick(self) -> None:
        self._timer = None
        for i in self.tracker.tick(self._now()).changed:
            self._report(i)
        self._reschedule()

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.tracker.next_deadline(self._now())
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._tick)

    def _report(self, interface: str) -> None:
        self._sequence += 1
        now = utcnow()
        state = message(
            router="clusterd",
            interface=interface,
            boot=self.boot,
            sequence=self._sequence,
            observed_at=timestamp(now),
            views=self.tracker.view(interface, self._now()),
        )
        self._submit(
            Report(kind="router-advertisement", transport="raw-socket", state=state, received_at=now)
        )
