"""The command hook ``[[exec]]`` (routerd/adapters/exec_hook.py, routerd/core/hookqueue.py).

The queue's rules as table tests; the sink with real processes (small scripts each test
writes): what a run gets on stdin and in its environment, a hanging hook killed at its
timeout with its children and retried, a failing one retried with backoff, overlapping
changes never running two instances, a retry superseded by a newer state; and the real
routerd reporting a failing hook in ``routerd status``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from random import Random
from typing import Any, TypeVar

import pytest

from routerd.adapters.exec_hook import ExecSink
from routerd.cli import control_request
from routerd.config import ConfigError, ExecSection
from routerd.core.backoff import Backoff
from routerd.core.hookqueue import HookQueue
from routerd.core.wire import Prefix, PrefixState, PrefixStatus, SourceKind
from tests.ground.routerd_proc import QUIET_LO, Routerd
from tests.ground.waiting import wait_until

A, B, C = "2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:c::/64"
T = TypeVar("T")


def state(seq: int, *prefixes: str, valid: int = 3600, iface: str = "br-lan") -> PrefixState:
    """A message with ``prefixes`` preferred (best first)."""
    return PrefixState(
        router="edge", interface=iface, boot="0123456789abcdef", sequence=seq, observed_at="2026-11-29T12:00:00Z",
        prefixes=tuple(Prefix(prefix=p, state=PrefixStatus.PREFERRED, valid_lifetime=valid, preferred_lifetime=valid,
                              sources=(SourceKind.RA,)) for p in prefixes),
    )  # fmt: skip


def fast_backoff(base: float) -> Callable[[], Backoff]:
    return lambda: Backoff(base=base, rng=Random(0))


# -- the queue (pure) -------------------------------------------------------------------------


def test_the_queue_runs_each_change_once_and_skips_heartbeats() -> None:
    q = HookQueue()
    q.offer(state(1, A), now=0)
    assert q.take(0) == state(1, A) and q.take(0) is None  # one at a time
    q.finished(ok=True, now=1)
    q.offer(state(2, A, valid=3000), now=300)  # a heartbeat: lifetimes only
    assert q.take(300) is None and q.queued() == 0
    q.offer(state(3, B, A), now=400)
    assert q.take(400) == state(3, B, A)


def test_the_queue_retries_a_failure_after_its_backoff_and_a_change_cuts_the_wait_short() -> None:
    q = HookQueue(backoff=fast_backoff(10))
    q.offer(state(1, A), now=0)
    q.take(0)
    q.finished(ok=False, now=0)
    retry = q.next_retry()
    assert retry is not None and 5 <= retry <= 10 and q.failures == 1
    assert q.take(retry - 0.1) is None
    q.offer(state(2, A, valid=3000), now=1)  # a heartbeat refreshes what the retry sends, not when
    assert q.take(1) is None and q.take(retry) == state(2, A, valid=3000)
    q.finished(ok=False, now=retry)
    q.offer(state(3, B), now=retry + 1)  # a change runs at once, with only the newest state
    assert q.take(retry + 1) == state(3, B)
    q.finished(ok=True, now=retry + 2)
    assert q.failures == 0 and q.next_retry() is None and q.take(retry + 100) is None


def test_a_state_arriving_during_a_run_waits_for_it_and_only_the_newest_runs() -> None:
    q = HookQueue()
    q.offer(state(1, A), now=0)
    q.take(0)
    for seq, p in ((2, B), (3, C), (4, A)):
        q.offer(state(seq, p), now=0.1)
        assert q.take(0.1) is None
    q.finished(ok=True, now=1)
    assert q.take(1) is None  # B and C came and went while it ran: the hook has A, the newest
    q.offer(state(5, B), now=2)
    q.take(2)
    for seq, p in ((6, C), (7, A)):
        q.offer(state(seq, p), now=2.1)
    q.finished(ok=False, now=3)
    assert q.take(3) == state(7, A)  # B failed, but A is what the hook must have now: at once


def test_a_heartbeat_during_a_successful_run_does_not_run_it_again() -> None:
    q = HookQueue()
    q.offer(state(1, A), now=0)
    q.take(0)
    q.offer(state(2, A, valid=3000), now=0.5)
    q.finished(ok=True, now=1)
    assert q.take(1) is None and q.next_due() is None


# -- the sink, with real processes ---------------------------------------------------------------


async def until(check: Callable[[], T], within: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + within
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {within}s")
        await asyncio.sleep(0.02)
    return value


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def runs(log: Path) -> list[dict[str, Any]]:
    """One JSON object per run, appended by the hook scripts below."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def test_a_run_gets_the_wire_message_on_stdin_and_the_variables(tmp_path: Path) -> None:
    out = tmp_path / "stdin.json"
    env = tmp_path / "env"
    hook = script(tmp_path / "hook", f"cat > {out}\nenv | grep ^DYNAMIC_PREFIX_ | sort > {env}\n")
    sink = ExecSink(ExecSection(command=(str(hook),)))
    await sink.start()
    try:
        msg = state(7, B, A)
        sink.publish(msg)
        await until(lambda: sink.health.last_outcome == "ok", what="a successful run")
    finally:
        await sink.stop()
    assert out.read_bytes() == msg.to_json() + b"\n"  # byte for byte what MQTT publishes
    assert env.read_text().splitlines() == [
        f"DYNAMIC_PREFIX_CURRENT={B}",
        "DYNAMIC_PREFIX_INTERFACE=br-lan",
        "DYNAMIC_PREFIX_ROUTER=edge",
        "DYNAMIC_PREFIX_SEQUENCE=7",
    ]


async def test_a_hanging_hook_is_killed_with_its_children_at_the_timeout_and_retried(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell waits on a child in its process group: both must go when the time is up.
    hook = script(tmp_path / "hook", f"sleep 300 &\necho $$ $! >> {pids}\nwait\n")
    sink = ExecSink(ExecSection(command=(str(hook),), timeout=0.5))
    sink.queue.backoff = fast_backoff(0.2)
    await sink.start()
    try:
        started = time.monotonic()
        sink.publish(state(1, A))
        await until(lambda: sink.health.failures >= 2, what="two timed-out runs")
        elapsed = time.monotonic() - started
        last_outcome = sink.health.last_outcome
        assert last_outcome is not None and last_outcome.startswith("timed out after 0.5 s"), last_outcome
        for line in pids.read_text().splitlines()[:2]:
            for pid in map(int, line.split()):
                await until(lambda pid=pid: not _alive(pid), what=f"process {pid} gone")
        assert elapsed >= 1.0  # each run got its full timeout
        problem = sink.delivery.problem(0, 0, 0)
        assert problem is not None and "timed out" in problem
    finally:
        await sink.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too: its parent (the hook's shell) is gone, and init may be slow to reap it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_failing_hook_is_retried_with_backoff_and_reported(tmp_path: Path) -> None:
    log = tmp_path / "runs"
    # Fails twice (saying why on stderr), then succeeds.
    hook = script(tmp_path / "hook", f"""n=$(( $(cat {log} 2>/dev/null | wc -l) + 1 ))
echo '{{"n": '$n', "at": '$(date +%s.%N)'}}' >> {log}
[ $n -ge 3 ] || {{ echo "no route to the DNS server" >&2; exit 3; }}
""")  # fmt: skip
    sink = ExecSink(ExecSection(command=(str(hook),)))
    sink.queue.backoff = fast_backoff(0.4)
    await sink.start()
    try:
        sink.publish(state(1, A))
        await until(lambda: sink.health.failures == 1, what="the first failure")
        report = sink.delivery.report(time.monotonic(), sink.queued())
        assert report["last_outcome"] == "exit status 3: no route to the DNS server"
        assert report["failures"] == 1 and 0 <= report["next_retry_in"] <= 0.4 and report["queued"] == 1
        assert sink.delivery.problem(0, 0, 0) is not None
        await until(lambda: sink.health.last_outcome == "ok", what="success on the third run")
        assert sink.health.failures == 0 and sink.delivery.problem(0, 0, 0) is None and sink.queued() == 0
    finally:
        await sink.stop()
    at = [r["at"] for r in runs(log)]
    assert len(at) == 3
    assert at[1] - at[0] >= 0.2 and at[2] - at[1] >= 0.4  # Backoff: base*2**n, jitter 0.5..1


async def test_overlapping_changes_never_run_two_instances(tmp_path: Path) -> None:
    log = tmp_path / "runs"
    lock = tmp_path / "lock"
    hook = script(tmp_path / "hook", f"""mkdir {lock} 2>/dev/null || {{ echo overlap >> {tmp_path / "overlaps"}; }}
echo '{{"seq": '$DYNAMIC_PREFIX_SEQUENCE'}}' >> {log}
sleep 0.4
rmdir {lock}
""")  # fmt: skip
    sink = ExecSink(ExecSection(command=(str(hook),)))
    await sink.start()
    try:
        sink.publish(state(1, A))
        await until(lambda: runs(log), what="the first run")
        for seq, p in enumerate((B, C, A, B, C), start=2):
            sink.publish(state(seq, p))
            await asyncio.sleep(0.05)
        await until(lambda: len(runs(log)) == 2 and sink.queued() == 0, what="the second run")
        await asyncio.sleep(0.6)  # nothing else may start
    finally:
        await sink.stop()
    assert not (tmp_path / "overlaps").exists()
    assert [r["seq"] for r in runs(log)] == [1, 6]  # the newest state, once


async def test_a_hook_superseded_while_retrying_gets_only_the_newest_state(tmp_path: Path) -> None:
    log = tmp_path / "runs"
    hook = script(tmp_path / "hook", f"""echo '{{"current": "'$DYNAMIC_PREFIX_CURRENT'"}}' >> {log}
[ "$DYNAMIC_PREFIX_CURRENT" != "{A}" ]
""")  # fmt: skip
    sink = ExecSink(ExecSection(command=(str(hook),)))
    sink.queue.backoff = fast_backoff(30)  # a retry of A would come 15..30 s later
    await sink.start()
    try:
        sink.publish(state(1, A))
        await until(lambda: sink.health.failures == 1, what="A failed")
        assert sink.health.next_retry is not None
        sink.publish(state(2, A, valid=3000))  # a heartbeat: the retry still waits
        await asyncio.sleep(0.3)
        assert len(runs(log)) == 1
        sink.publish(state(3, B, A))
        await until(lambda: sink.health.last_outcome == "ok", within=5, what="B ran at once")
        assert sink.health.next_retry is None and sink.queued() == 0
    finally:
        await sink.stop()
    assert [r["current"] for r in runs(log)] == [A, B]


async def test_stopping_routerd_ends_a_running_hook(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = script(tmp_path / "hook", f"echo $$ >> {pids}\nexec sleep 300\n")
    sink = ExecSink(ExecSection(command=(str(hook),), timeout=600))
    await sink.start()
    sink.publish(state(1, A))
    await until(lambda: pids.exists() and pids.read_text(), what="the hook running")
    await sink.stop()
    assert not _alive(int(pids.read_text()))


def test_a_missing_program_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"exec\.1\.command: /nonexistent/hook is not an executable file"):
        ExecSink(ExecSection(command=("/nonexistent/hook",)), setting="exec.1")
    with pytest.raises(ConfigError, match="not an executable file on \\$PATH"):
        ExecSink(ExecSection(command=("no-such-program-here",)))


# -- the real routerd -----------------------------------------------------------------------------


def test_routerd_status_shows_a_failing_hook_until_it_succeeds(tmp_path: Path) -> None:
    ctl = tmp_path / "ctl.sock"
    flag = tmp_path / "fixed"
    hook = script(
        tmp_path / "hook", f'[ -e {flag} ] || {{ echo "cannot reach the firewall API" >&2; exit 2; }}\n'
    )
    config = f"""router_id = "edge"
control_socket = "{ctl}"
{QUIET_LO}[[exec]]
command = ["{hook}"]
timeout = 5
"""
    r = Routerd(None, tmp_path / "r", config)
    try:
        r.wait_log(f"publishing to exec {hook}")
        status = wait_until(lambda: ctl.exists() and (s := control_request(ctl, {"op": "status"}))["sinks"][0][
            "failures"] and s, timeout=20, what="a failed run in status")  # fmt: skip
        (sink,) = status["sinks"]
        assert status["ok"] is False and status["problems"] == [f"exec: {hook}: {sink['last_error']}"]
        assert sink["name"] == "exec" and sink["target"] == str(hook)
        assert sink["last_outcome"] == "exit status 2: cannot reach the firewall API"
        assert sink["next_retry_in"] is not None and sink["queued"] == 1
        r.wait_log("command hook failed: exit status 2: cannot reach the firewall API; will retry")
        flag.touch()
        ok = wait_until(lambda: (s := control_request(ctl, {"op": "status"}))["ok"] and s, timeout=20,
                        what="ok once the hook succeeds")  # fmt: skip
        (sink,) = ok["sinks"]
        assert sink["last_outcome"] == "ok" and sink["failures"] == 0 and sink["next_retry_in"] is None
    finally:
        r.stop()


def test_check_config_refuses_a_hook_that_cannot_run(tmp_path: Path) -> None:
    cfg = tmp_path / "routerd.toml"
    cfg.write_text('[[exec]]\ncommand = ["/usr/local/bin/not-there", "--flag"]\n')
    out = subprocess.run([sys.executable, "-m", "routerd", "check-config", str(cfg)],
                         capture_output=True, text=True, check=False, timeout=30)  # fmt: skip
    assert out.returncode == 2
    assert "exec.0.command: /usr/local/bin/not-there is not an executable file" in out.stderr


def test_openwrt_uci_configures_a_hook_with_one_list_line_per_argument() -> None:
    from routerd.config import parse
    from routerd.uci import parse_uci

    cfg = parse(parse_uci("config exec\n\tlist command '/usr/bin/ddns-update'\n\tlist command 'nas'\n"
                          "\toption timeout '60'\n"))  # fmt: skip
    assert cfg.exec == (ExecSection(command=("/usr/bin/ddns-update", "nas"), timeout=60),)
