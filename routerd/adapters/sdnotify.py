"""systemd notifications: READY=1, WATCHDOG=1, STATUS=, STOPPING=1.

Uses systemd-python when it is importable; otherwise speaks the tiny
NOTIFY_SOCKET datagram protocol itself, so ``Type=notify`` works without the
extra package. Without NOTIFY_SOCKET (OpenWrt, a terminal) it does nothing.
"""

from __future__ import annotations

import os
import socket


def _stdlib_notify(state: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.sendall(state.encode())


try:
    from systemd import daemon as _daemon

    def notify(state: str) -> None:
        """Send ``state`` (e.g. ``READY=1``) to systemd, if routerd runs under it."""
        if os.environ.get("NOTIFY_SOCKET"):
            _daemon.notify(state)

except ImportError:  # OpenWrt, or a host without python3-systemd
    notify = _stdlib_notify


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds, if systemd expects pings from this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
