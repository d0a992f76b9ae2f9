"""The nftables sink: named sets that follow the prefixes (docs/nftables.md).

Mode ``table``: routerd declares its sets in ``table inet <table>`` and
replaces their elements with one ``nft -f`` transaction per change, which the
kernel applies whole or not at all: a refused transaction (a set the user
declared differently, nft missing) leaves every set as it was. Elements carry
the prefix's remaining valid lifetime as their timeout.

Mode ``fw4`` (OpenWrt): firewall4 re-renders its table on every reload and
interface update, flushing elements added behind its back, so routerd writes
each set's ``loadfile`` instead and runs ``fw4 reload-sets``.

Failures are retried with backoff and shown in ``routerd status``. Until this
run has written a set with something in it, an empty state (routerd just
started, the uplink down) does not empty the sets: the elements of the last
run stay until their timeouts end. nft and fw4 run as child processes (about
16 ms a write, docs/performance.md): libnftables through ctypes would take
0.4 ms but add 2.2 MB to routerd's memory for good, for writes minutes apart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

from routerd.adapters.delivery import Delivery
from routerd.config import NftablesSection
from routerd.core import nftsets
from routerd.core.backoff import Backoff
from routerd.core.wire import PrefixState
from routerd.logs import kv

LOG = logging.getLogger("routerd.nft")
COMMAND_TIMEOUT = 30.0
"""Seconds an ``nft -f`` or ``fw4 reload-sets`` may take before it counts as failed."""
INSTALL = {
    "nft": "Debian/Ubuntu: apt install nftables; OpenWrt: apk add nftables or opkg install nftables",
    "fw4": 'fw4 is OpenWrt\'s firewall4, 22.03 and later; elsewhere use [nftables] mode = "table"',
}


class NftSink:
    """Keeps the configured sets in step with the newest state of each interface."""

    name = "nftables"

    def __init__(self, cfg: NftablesSection) -> None:
        self.cfg = cfg
        self.ranges = tuple(nftsets.RangeSet(r.set, r.start, r.end) for r in cfg.ranges)
        target = f"table inet {cfg.table}" if cfg.mode == "table" else f"fw4 loadfiles in {cfg.loadfile_dir}"
        self.delivery = Delivery(target)
        self._states: dict[str, nftsets.Received] = {}
        self._wanted = 1  # generations of the input: the declarations are due at start
        self._applied = 0
        self._filled = False
        self._loaded: dict[str, str] = {}
        """fw4 mode: each loadfile as last written and reloaded."""
        self._shown: dict[str, list[str]] = {}
        """The networks last logged, so an unchanged heartbeat is not logged again."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._worker())
        self._wake.set()

    def publish(self, msg: PrefixState) -> None:
        if self.cfg.interfaces and msg.interface not in self.cfg.interfaces:
            return
        self._states[msg.interface] = nftsets.Received(msg, asyncio.get_running_loop().time())
        self._wanted += 1
        self._wake.set()

    def queued(self) -> int:
        """1 while the sets do not hold the newest state yet."""
        return int(self._applied != self._wanted)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _worker(self) -> None:
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            generation = self._wanted
            sets = nftsets.contents(
                self.cfg.prefix_set,
                self.ranges,
                nftsets.valid_prefixes(self._states.values(), loop.time()),
            )
            fill = self._filled or any(sets.values())
            apply = self._apply_table if self.cfg.mode == "table" else self._apply_fw4
            error = await loop.run_in_executor(None, apply, sets, fill)
            if error is None:
                self._applied = generation
                self._filled = fill
                self.delivery.succeeded()
                backoff.reset()
                continue
            self.delivery.failed(error)
            delay = backoff.next()
            LOG.warning(f"{error}; retrying in {delay:.0f} s", extra=kv(target=self.delivery.target))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                self._wake.set()

    def _apply_table(self, sets: dict[str, tuple[nftsets.Element, ...]], fill: bool) -> str | None:
        """One ``nft -f`` transaction; None when applied, else why not."""
        error = run(["nft", "-f", "-"], nftsets.script(self.cfg.table, sets, fill=fill))
        if error is not None:
            if "File exists" in error:
                error += (
                    f" (a set of that name in table inet {self.cfg.table} is declared with another type "
                    "or flags: routerd's sets are `type ipv6_addr; flags interval, timeout`)"
                )
            return f"the sets were not written and keep their previous elements: {error}"
        self._log("nftables sets updated", sets)
        return None

    def _apply_fw4(self, sets: dict[str, tuple[nftsets.Element, ...]], fill: bool) -> str | None:
        """Rewrite the loadfiles that changed, then ``fw4 reload-sets``; None when done, else why not."""
        files = {name: nftsets.loadfile(name, elements) for name, elements in sets.items()}
        if not fill or files == self._loaded:
            return None
        try:
            self.cfg.loadfile_dir.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                write_atomically(self.cfg.loadfile_dir / f"{name}.txt", text)
        except OSError as e:
            return f"cannot write the fw4 loadfiles in {self.cfg.loadfile_dir}: {e.strerror or e}"
        self._loaded = {}  # the files changed: reload even if what follows fails
        error = run(["fw4", "-q", "reload-sets"], "")
        if error is not None:
            return f"the fw4 sets were not reloaded and keep their previous elements: {error}"
        self._loaded = files
        self._log("fw4 sets reloaded", sets)
        return None

    def _log(self, what: str, sets: dict[str, tuple[nftsets.Element, ...]]) -> None:
        shown = {name: [str(n) for n, _ in elements] for name, elements in sets.items()}
        level = logging.DEBUG if shown == self._shown else logging.INFO
        LOG.log(level, what, extra=kv(target=self.delivery.target, sets=shown))
        self._shown = shown


def run(argv: list[str], stdin: str) -> str | None:
    """Run ``argv`` with ``stdin``; None when it exits 0, else what went wrong in one line."""
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except FileNotFoundError:
        return f"{argv[0]} is not installed or not on PATH ({INSTALL.get(argv[0], 'install it')})"
    except subprocess.TimeoutExpired:
        return f"{' '.join(argv)} did not finish within {COMMAND_TIMEOUT:.0f} s"
    if done.returncode == 0:
        return None
    said = " / ".join(line.strip() for line in done.stderr.splitlines() if "Error" in line)
    return f"{' '.join(argv)} exited {done.returncode}: {said or done.stderr.strip() or 'no message'}"


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` so that fw4, reading it at any moment, sees the old or the new file whole."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
