"""The README's lab demo: ``--help`` installs nothing, and SIGTERM leaves nothing behind.

The demo runs for real (kube-apiserver, etcd, Mosquitto, radvd in network
namespaces, routerd, clusterd); the test stops it with SIGTERM, as a service
manager or ``timeout`` would, and looks for anything left: processes,
namespaces, temporary directories.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.ground import testbin
from tests.ground.require import missing, require_program
from tests.ground.waiting import wait_for_line

ROOT = Path(__file__).resolve().parents[2]


def test_help_installs_nothing(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    for name in ("demo", "demo.py", "lib.sh"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    out = subprocess.run(["sh", str(tmp_path / "scripts" / "demo"), "--help"], capture_output=True, text=True,
                         timeout=30, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: scripts/demo") and "--keep" in out.stdout
    assert "==>" not in out.stderr, out.stderr  # no install step ran
    assert not (tmp_path / ".venv").exists()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the demo starts each part in its own session)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.apiserver
@pytest.mark.mqtt
@pytest.mark.lab
@pytest.mark.usefixtures("_labs_ready")
def test_sigterm_stops_the_demo_and_leaves_nothing_behind(tmp_path: Path) -> None:
    require_program("radvd", "radvd")
    require_program("mosquitto", "mosquitto")
    if not (testbin.find("kube-apiserver") and testbin.find("etcd")):
        missing("kube-apiserver/etcd test binaries (scripts/test builds them)")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--keep"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert demo.stdout is not None
        lines.extend(raw.decode(errors="replace").rstrip("\n") for raw in demo.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for_line(lines, "running; KUBECONFIG=", 150, "the demo")
        started = children(demo.pid)
        netns = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                           check=True).stdout.split() if n.startswith(f"dp-{demo.pid}-")]  # fmt: skip
        assert len(started) >= 5 and len(netns) == 2, (started, netns)  # etcd, apiserver, broker, radvd, ...
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    reader.join(timeout=5)
    text = "\n".join(lines)
    assert "\x1b[" not in text, "escape codes in output that is not a terminal"
    assert "stopped and removed" in lines[-1], text[-2000:]
    deadline = time.monotonic() + 10
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in started if alive(p)], "processes the demo started are still running"
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [n for n in netns if n in left.split()], left
    assert list(tmp.iterdir()) == [], "temporary directories left behind"
