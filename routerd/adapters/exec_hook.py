"""The command hook (``[[exec]]``): run the user's command when the prefix state changes.

The command gets the wire message on stdin (the same JSON MQTT publishes)
and these environment variables on top of routerd's own:

``DYNAMIC_PREFIX_CURRENT``
    the first ``preferred`` prefix (``2001:db8:1::/64``), empty when there is none
``DYNAMIC_PREFIX_ROUTER``, ``DYNAMIC_PREFIX_INTERFACE``, ``DYNAMIC_PREFIX_SEQUENCE``
    the message's ``router``, ``interface`` and ``sequence``

It runs in a session of its own, without a shell; a run that outlives
``timeout`` has its whole process group sent SIGTERM, then SIGKILL. What to
run when is :class:`routerd.core.hookqueue.HookQueue`'s call: one run at a
time, the newest state only, failures retried with backoff. Standard library
only (OpenWrt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
from dataclasses import dataclass
from typing import Any

from routerd.adapters.delivery import Delivery
from routerd.config import ConfigError, ExecSection
from routerd.core.hookqueue import HookQueue
from routerd.core.wire import PrefixState, PrefixStatus
from routerd.logs import kv

LOG = logging.getLogger("routerd.exec")
KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL for a hook that ran out of time."""
OUTPUT_TAIL = 2048
"""Bytes of a run's output kept for the log and ``routerd status``."""


def environment(msg: PrefixState) -> dict[str, str]:
    """The DYNAMIC_PREFIX_* variables for ``msg``."""
    current = next((p.prefix for p in msg.prefixes if p.state is PrefixStatus.PREFERRED), None)
    return {
        "DYNAMIC_PREFIX_CURRENT": str(current or ""),
        "DYNAMIC_PREFIX_ROUTER": msg.router,
        "DYNAMIC_PREFIX_INTERFACE": msg.interface,
        "DYNAMIC_PREFIX_SEQUENCE": str(msg.sequence),
    }


@dataclass
class HookDelivery(Delivery):
    """A hook's record: it runs on changes only, so a quiet spell is no problem; a failed last run is."""

    last_outcome: str | None = None
    failures: int = 0
    next_retry: float | None = None
    running: bool = False

    def problem(self, now: float, window: float, started: float) -> str | None:
        if self.failures:
            return f"{self.target}: {self.last_error}"
        return None

    def report(self, now: float, queued: int) -> dict[str, Any]:
        retry = None if self.next_retry is None else round(max(0.0, self.next_retry - now), 1)
        return {**super().report(now, queued), "running": self.running, "last_outcome": self.last_outcome,
                "failures": self.failures, "next_retry_in": retry}  # fmt: skip


class _Output:
    """The tail of what a run writes to stdout and stderr, read from a pipe as it comes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.tail = bytearray()
        loop.add_reader(self.read_end, self._read)

    def _read(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read_end, 65536):
                self.tail += chunk
                del self.tail[:-OUTPUT_TAIL]
            self._loop.remove_reader(self.read_end)  # end of file

    def close(self) -> str:
        """What is left in the pipe, and the tail; a child the hook left behind writes into the void."""
        self._read()
        self._loop.remove_reader(self.read_end)
        os.close(self.read_end)
        return self.tail.decode(errors="replace").strip()


class ExecSink:
    """Runs one ``[[exec]]`` command per change, one instance at a time."""

    name = "exec"

    def __init__(self, cfg: ExecSection, setting: str = "exec") -> None:
        if shutil.which(cfg.command[0]) is None:
            raise ConfigError(
                f"{setting}.command: {cfg.command[0]} is not an executable file"
                + ("" if "/" in cfg.command[0] else " on $PATH")
                + "; give its full path, and make it executable (chmod +x)"
            )
        self.cfg = cfg
        self.queue = HookQueue()
        self.health = HookDelivery(shlex.join(cfg.command))
        self.delivery: Delivery = self.health  # what the daemon reads
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._worker())

    def publish(self, msg: PrefixState) -> None:
        self.queue.offer(msg, asyncio.get_running_loop().time())
        self._wake.set()

    def queued(self) -> int:
        return self.queue.queued()

    async def stop(self) -> None:
        """Stop; a run under way is ended like one that timed out."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            msg = self.queue.take(loop.time())
            if msg is None:
                due = self.queue.next_due()
                self.health.next_retry = self.queue.next_retry()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), None if due is None else max(0.0, due - loop.time())
                    )
                continue
            self.health.running = True
            try:
                failure = await self._run(msg)
            finally:
                self.health.running = False
            self.queue.finished(failure is None, loop.time())
            self._record(msg, failure)

    def _record(self, msg: PrefixState, failure: str | None) -> None:
        fields = kv(command=self.health.target, interface=msg.interface, sequence=msg.sequence)
        self.health.failures = self.queue.failures
        self.health.next_retry = self.queue.next_retry()
        if failure is None:
            self.health.last_outcome = "ok"
            self.health.succeeded()
            LOG.info("command hook ran", extra=fields)
            return
        self.health.last_outcome = failure
        self.health.failed(failure)
        LOG.warning(f"command hook failed: {failure}; will retry", extra=fields)

    async def _run(self, msg: PrefixState) -> str | None:
        """Run the command with ``msg``; None when it exited 0, else what went wrong."""
        loop = asyncio.get_running_loop()
        try:
            output = _Output(loop)
        except OSError as e:  # no file descriptors left
            return f"cannot start {self.cfg.command[0]}: no pipe for its output ({e.strerror or e})"
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.cfg.command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=output.write_end,
                    stderr=output.write_end,
                    env={**os.environ, **environment(msg)},
                    start_new_session=True,  # its own process group, so a timeout ends all of it
                )
            finally:
                os.close(output.write_end)
        except OSError as e:
            output.close()
            return f"cannot start {self.cfg.command[0]}: {e.strerror or e}"
        try:
            await asyncio.wait_for(self._feed(proc, msg.to_json()), self.cfg.timeout)
        except TimeoutError:
            await self._kill(proc)
            return _with_output(
                f"timed out after {self.cfg.timeout:g} s (process group killed)", output.close()
            )
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(proc))
            output.close()
            raise
        said = output.close()
        if proc.returncode == 0:
            if said:
                LOG.debug(f"command hook said: {said}")
            return None
        code = proc.returncode
        assert code is not None
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return _with_output(why, said)

    @staticmethod
    async def _feed(proc: asyncio.subprocess.Process, body: bytes) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a hook need not read stdin
            proc.stdin.write(body + b"\n")
            await proc.stdin.drain()
        proc.stdin.close()
        await proc.wait()

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        """SIGTERM to the hook's process group, SIGKILL if it is still there after a grace period."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), KILL_GRACE)
            except TimeoutError:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their leader
            return


def _with_output(why: str, said: str) -> str:
    """``why``, plus the last line the hook wrote (often its own error message)."""
    last = said.splitlines()[-1] if said else ""
    return f"{why}: {last}" if last else why
