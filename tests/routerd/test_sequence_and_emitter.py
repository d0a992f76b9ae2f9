"""Sequences that never go backwards (routerd/core/sequence.py and its store) and publish timing (core/emitter.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from routerd.core.emitter import EmitPolicy, Emitter
from routerd.core.sequence import BLOCK, PLAUSIBLE_WALL_MS, SequenceAllocator


def run(alloc: SequenceAllocator, n: int) -> tuple[list[int], int | None]:
    out, persisted = [], None
    for _ in range(n):
        value, reserve = alloc.take()
        persisted = reserve if reserve is not None else persisted
        out.append(value)
    return out, persisted


def test_reservations_are_written_once_per_block() -> None:
    alloc = SequenceAllocator.resume(None, wall_ms=0)
    writes = 0
    for _ in range(2500):
        _, reserve = alloc.take()
        writes += reserve is not None
    assert writes == 3


def test_restart_resumes_above_everything_used_even_with_the_clock_gone_back() -> None:
    first = SequenceAllocator.resume(None, wall_ms=PLAUSIBLE_WALL_MS + 86_400_000)
    used, persisted = run(first, 1500)
    # Router reboots, NTP not synced yet: the wall clock is a day behind (or 1970).
    for wall in (PLAUSIBLE_WALL_MS, 0):
        second = SequenceAllocator.resume(persisted, wall_ms=wall)
        assert second.take()[0] > max(used)


def test_a_lost_state_file_is_covered_by_a_synced_clock() -> None:
    first = SequenceAllocator.resume(None, wall_ms=PLAUSIBLE_WALL_MS)
    used, _ = run(first, 10)
    later = SequenceAllocator.resume(None, wall_ms=PLAUSIBLE_WALL_MS + 1000)
    assert later.take()[0] > max(used)


def test_an_unsynced_clock_is_not_trusted() -> None:
    assert SequenceAllocator.resume(None, wall_ms=1000).take()[0] == 0
    assert SequenceAllocator.resume(5 * BLOCK, wall_ms=1000).take()[0] == 5 * BLOCK


def test_first_change_publishes_at_once_then_changes_coalesce() -> None:
    e = Emitter(EmitPolicy(hold_down=2.0, heartbeat=300.0))
    assert e.changed("eth0", 10.0)
    e.published("eth0", 10.0)
    assert not e.changed("eth0", 10.5)
    assert not e.changed("eth0", 11.0)
    assert e.next_deadline() == 12.0
    assert e.due(11.9) == []
    assert e.due(12.0) == ["eth0"]
    e.published("eth0", 12.0)
    assert e.changed("eth0", 14.5)  # outside the window: immediate again


def test_heartbeat_republishes_an_unchanged_state() -> None:
    e = Emitter(EmitPolicy(hold_down=2.0, heartbeat=60.0))
    e.published("eth0", 0.0)
    e.published("wlan0", 30.0)
    assert e.next_deadline() == 60.0
    assert e.due(60.0) == ["eth0"]
    e.published("eth0", 60.0)
    assert e.due(90.0) == ["wlan0"]


def test_flapping_costs_a_bounded_number_of_publishes() -> None:
    e = Emitter(EmitPolicy(hold_down=2.0, heartbeat=300.0))
    publishes = 0
    now = 0.0
    for _ in range(100):  # a change every 100 ms for 10 s
        if e.changed("eth0", now):
            e.published("eth0", now)
            publishes += 1
        for _iface in e.due(now):
            e.published("eth0", now)
            publishes += 1
        now += 0.1
    assert publishes <= 10 / 2.0 + 1


# Runs SequenceStore.save in a fresh interpreter with an audit hook (PEP 578) that records the
# file-system calls CPython itself reports: the real calls on a real directory, nothing replaced.
_SAVE_AND_RECORD = """
import json, sys
from pathlib import Path
from routerd.daemon import SequenceStore
store, calls = SequenceStore(Path(sys.argv[1])), []
def hook(event, args):
    if event == "open" and calls is not None:
        calls.append(["open", str(args[0]), args[2]])
    elif event == "os.rename" and calls is not None:
        calls.append(["rename", str(args[0]), str(args[1])])
sys.addaudithook(hook)
store.save(1234)
recorded, calls = calls, None
print(json.dumps(recorded))
"""


def test_the_sequence_store_syncs_its_directory_after_the_rename(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _SAVE_AND_RECORD, str(tmp_path)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    calls = json.loads(out.stdout)
    tmp, final = str(tmp_path / "sequence.tmp"), str(tmp_path / "sequence")
    assert [c[:2] for c in calls] == [["open", tmp], ["rename", tmp], ["open", str(tmp_path)]]
    assert calls[1][2] == final
    # The directory is opened read-only as a directory, after the rename: that descriptor is
    # what save() fsyncs (the fsync itself raises no audit event, so this cannot see it).
    flags = calls[2][2]
    assert flags & os.O_DIRECTORY and flags & os.O_ACCMODE == os.O_RDONLY
    assert (tmp_path / "sequence").read_text() == "1234\n" and not (tmp_path / "sequence.tmp").exists()
