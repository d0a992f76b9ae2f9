"""Which interface carries the default route (the embedded default watches it)."""

from __future__ import annotations

from pathlib import Path


def default_route_interface(proc: Path = Path("/proc/self/net")) -> str | None:
    """The interface of the IPv6 default route, else of the IPv4 one, else None.

    ``/proc/self/net``, not ``/proc/net``: the systemd unit's ``ProcSubset=pid``
    hides the latter.
    """
    try:
        for line in (proc / "ipv6_route").read_text().splitlines():
            f = line.split()
            # dest, dest len, src, src len, next hop, metric, refcnt, use, flags, device
            if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo":
                return f[9]
    except OSError:
        pass
    try:
        for line in (proc / "route").read_text().splitlines()[1:]:
            f = line.split()
            if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000":
                return f[0]
    except OSError:
        pass
    return None
