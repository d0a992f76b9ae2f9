"""Free loopback ports for the real servers the tests start."""

from __future__ import annotations

import socket


def free_port(family: int = socket.AF_INET) -> int:
    """Ask the kernel for a free TCP port on loopback.

    There is a small window before the server binds it; every server here is
    started right after and retried once on a bind failure.
    """
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
