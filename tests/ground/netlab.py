"""Throw-away network labs: an "ISP router" namespace and a "host" namespace.

The two namespaces are joined by a veth pair. radvd runs in the router
namespace and can change what it advertises at run time (rewrite radvd.conf,
SIGHUP); hand-made RA packets can be injected from the router side for the
malformed and rogue cases; routerd or clusterd run in the host namespace with
``lab.popen(lab.host, [...])``. Names carry the test process id and a counter,
so parallel runs never collide, and ``destroy()`` removes everything even when
the test failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LAB_EPHEMERAL = "20000 29999"
"""The lab namespaces' ephemeral ports: below the root namespace's (32768-60999 by default)."""

CLONE_NEWNET = 0x40000000
INFINITE = 0xFFFFFFFF
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run the body with this thread in ``netns``; sockets made there stay there."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{netns}") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def run(argv: Sequence[str], netns: str | None = None, check: bool = True) -> str:
    """Run a command (in ``netns`` if given) and return its stdout."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    out = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def radvd_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    m = re.search(r"Version:\s*(\S+)", out.stdout + out.stderr)
    return f"radvd {m.group(1)}" if m else "radvd (unknown version)"


def sweep_stale() -> None:
    """Remove namespaces left behind by test processes that died (SIGKILL, power cut)."""
    for line in run(["ip", "netns", "list"]).splitlines():
        m = re.match(r"(dp-(\d+)-\w+)", line)
        if m and not Path(f"/proc/{m.group(2)}").exists():
            run(["ip", "netns", "del", m.group(1)], check=False)


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either side closes, then shut both down."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class Forwarder:
    """Relay TCP from a lab namespace's loopback to the same port on the root namespace's.

    The session's Mosquitto and test HTTP servers listen on the root
    namespace's 127.0.0.1; a program in the lab reaches them at its own
    127.0.0.1:<port> through this relay. ``cut()`` drops every connection and
    refuses new ones (a cable pulled between router and broker); ``mend()``
    undoes it.
    """

    def __init__(self, netns: str, port: int, into_netns: bool = False) -> None:
        self.port = port
        self.netns = netns
        self.into_netns = into_netns
        self._cut = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        if into_netns:  # listen here, connect to the program inside the namespace
            self._listener = socket.create_server(("127.0.0.1", port))
        else:
            with inside(netns):
                self._listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self) -> socket.socket:
        if self.into_netns:
            with inside(self.netns):
                return socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                inner, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                inner.close()
                continue
            try:
                outer = self._connect()
            except OSError:
                inner.close()  # the real server is down: the client sees a refused/reset connection
                continue
            outer.settimeout(None)
            with self._lock:
                self._conns += [inner, outer]
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def mend(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()


@dataclass(frozen=True)
class AdvPrefix:
    """One prefix as radvd should advertise it (lifetimes in seconds or INFINITE)."""

    prefix: str
    valid: int = 86400
    preferred: int = 14400
    on_link: bool = True
    autonomous: bool = True

    def radvd(self) -> str:
        def life(v: int) -> str:
            return "infinity" if v == INFINITE else str(v)

        return (
            f"  prefix {self.prefix} {{\n"
            f"    AdvOnLink {'on' if self.on_link else 'off'};\n"
            f"    AdvAutonomous {'on' if self.autonomous else 'off'};\n"
            f"    AdvValidLifetime {life(self.valid)};\n"
            f"    AdvPreferredLifetime {life(self.preferred)};\n"
            "  };\n"
        )


@dataclass
class Lab:
    """Router and host namespaces joined by one veth pair."""

    workdir: Path
    host_accept_ra: int = 0
    tag: str = field(default_factory=lambda: f"{os.getpid()}-{next(_counter)}")
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _radvd: subprocess.Popen[bytes] | None = None
    _forwarders: list[Forwarder] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.router = f"dp-{self.tag}-r"
        self.host = f"dp-{self.tag}-h"
        short = self.tag.replace("-", "")[-9:]
        self.router_if = f"dpr{short}"
        self.host_if = f"dph{short}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.radvd_conf = self.workdir / "radvd.conf"
        self.radvd_log = self.workdir / "radvd.log"

    # -- life cycle ------------------------------------------------------------------

    def create(self) -> Lab:
        for ns in (self.router, self.host):
            run(["ip", "netns", "add", ns])
            run(["ip", "link", "set", "lo", "up"], ns)
            # DAD would hold link-local addresses tentative for a second or more.
            run(["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"], ns)
            run(["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"], ns)
            # Servers in a lab namespace listen on ports free_port() found free in the root one, from
            # the kernel's ephemeral range; the lab's own outgoing connections take theirs from
            # below it, so one never holds a port a server there is about to bind.
            run(["sysctl", "-qw", f"net.ipv4.ip_local_port_range={LAB_EPHEMERAL}"], ns)
        run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], self.router)
        run(["sysctl", "-qw", f"net.ipv6.conf.default.accept_ra={self.host_accept_ra}"], self.host)
        run(["ip", "link", "add", self.router_if, "netns", self.router,
             "type", "veth", "peer", "name", self.host_if, "netns", self.host])  # fmt: skip
        run(
            ["sysctl", "-qw", f"net.ipv6.conf.{self.host_if}.accept_ra={self.host_accept_ra}"],
            self.host,
        )
        run(["ip", "link", "set", self.router_if, "up"], self.router)
        run(["ip", "link", "set", self.host_if, "up"], self.host)
        self.wait_link_local(self.router, self.router_if)
        self.wait_link_local(self.host, self.host_if)
        return self

    def destroy(self) -> None:
        """Stop every process started in the lab and delete both namespaces."""
        for f in self._forwarders:
            f.close()
        self._forwarders.clear()
        for p in [*self._procs, self._radvd]:
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self._procs.clear()
        self._radvd = None
        for ns in (self.router, self.host):
            run(["ip", "netns", "del", ns], check=False)

    def __enter__(self) -> Lab:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- addresses and links -------------------------------------------------------------

    def addresses(self, netns: str, ifname: str) -> list[dict[str, object]]:
        out = run(["ip", "-j", "-6", "addr", "show", "dev", ifname], netns)
        doc = json.loads(out or "[]")
        return list(doc[0].get("addr_info", [])) if doc else []

    def link_local(self, netns: str, ifname: str) -> str:
        for a in self.addresses(netns, ifname):
            if a.get("scope") == "link" and not a.get("tentative"):
                return str(a["local"])
        raise LookupError(f"no usable link-local address on {ifname} in {netns}")

    def wait_link_local(self, netns: str, ifname: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.link_local(netns, ifname)
            except LookupError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def router_ll(self) -> str:
        return self.link_local(self.router, self.router_if)

    def add_address(self, netns: str, ifname: str, cidr: str) -> None:
        run(["ip", "-6", "addr", "add", cidr, "dev", ifname, "nodad"], netns)

    def sysctl(self, netns: str, key: str, value: int | str) -> None:
        run(["sysctl", "-qw", f"{key}={value}"], netns)

    def set_link(self, up: bool) -> None:
        """Take the router side of the link down or up (a cut cable, seen from the host)."""
        run(["ip", "link", "set", self.router_if, "up" if up else "down"], self.router)

    def ifindex(self, netns: str, ifname: str) -> int:
        doc = json.loads(run(["ip", "-j", "link", "show", "dev", ifname], netns))
        return int(doc[0]["ifindex"])

    def forward(self, port: int, netns: str | None = None, into_netns: bool = False) -> Forwarder:
        """Make root-namespace 127.0.0.1:``port`` reachable at the same address in ``netns`` (the host).

        With ``into_netns``, the other way: a server in the namespace becomes
        reachable from the root namespace.
        """
        f = Forwarder(netns or self.host, port, into_netns)
        self._forwarders.append(f)
        return f

    # -- processes -------------------------------------------------------------------------

    def popen(self, netns: str, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        """Start a long-running program in a namespace; destroy() kills it."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", netns, *argv], start_new_session=True, **kw
        )
        self._procs.append(proc)
        return proc

    # -- radvd: the ISP router -----------------------------------------------------------------

    def write_radvd_conf(
        self,
        prefixes: Sequence[AdvPrefix],
        router_lifetime: int = 1800,
        interval: tuple[int, int] = (3, 4),
    ) -> None:
        body = "".join(p.radvd() for p in prefixes)
        self.radvd_conf.write_text(
            f"interface {self.router_if} {{\n"
            "  AdvSendAdvert on;\n"
            f"  MinRtrAdvInterval {interval[0]};\n"
            f"  MaxRtrAdvInterval {interval[1]};\n"
            f"  AdvDefaultLifetime {router_lifetime};\n"
            f"{body}"
            "};\n"
        )
        self.radvd_conf.chmod(0o644)

    def start_radvd(self, prefixes: Sequence[AdvPrefix], binary: str = "radvd", **conf: object) -> None:
        """Start radvd in the router namespace advertising ``prefixes``."""
        self.write_radvd_conf(prefixes, **conf)  # type: ignore[arg-type]
        log = open(self.radvd_log, "ab")  # noqa: SIM115 - closed with the process
        self._radvd = subprocess.Popen(
            ["ip", "netns", "exec", self.router, binary, "-n", "-C", str(self.radvd_conf),
             "-p", str(self.workdir / "radvd.pid"), "-m", "stderr", "-d", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def advertise(self, prefixes: Sequence[AdvPrefix], **conf: object) -> None:
        """Change what radvd advertises, at run time (rewrite the config, SIGHUP)."""
        assert self._radvd is not None, "start_radvd() first"
        self.write_radvd_conf(prefixes, **conf)  # type: ignore[arg-type]
        self._radvd.send_signal(signal.SIGHUP)

    def stop_radvd(self) -> None:
        if self._radvd is not None and self._radvd.poll() is None:
            self._radvd.terminate()
            self._radvd.wait(timeout=10)
        self._radvd = None

    # -- hand-made packets ---------------------------------------------------------------

    def ra_sender(
        self, *, hop_limit: int = 255, source: str | None = None, dest: str = "ff02::1"
    ) -> RASender:
        """A socket on the router side for hand-made ICMPv6 (close it, or use it in ``with``).

        ``source`` defaults to the router's link-local address (looked up
        once, here); give a global address (added with ``add_address``) for
        the off-link/rogue cases.
        """
        return RASender(self, hop_limit, source or self.router_ll, dest)

    def inject_ra(
        self,
        packet: bytes,
        *,
        hop_limit: int = 255,
        source: str | None = None,
        dest: str = "ff02::1",
    ) -> None:
        """Send raw ICMPv6 bytes from the router side (the kernel fills in the checksum), once."""
        with self.ra_sender(hop_limit=hop_limit, source=source, dest=dest) as sender:
            sender.send(packet)


class RASender:
    """A raw ICMPv6 socket in a lab's router namespace, bound to its source address and interface.

    Everything is set up when it opens, so :meth:`send` is one ``sendto``:
    a benchmark that takes its timestamp just before ``send`` times the
    packet, not a lookup or a socket's set-up.
    """

    def __init__(self, lab: Lab, hop_limit: int, source: str, dest: str) -> None:
        with inside(lab.router):
            idx = socket.if_nametoindex(lab.router_if)
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hop_limit)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hop_limit)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
            scope = idx if ipaddress.IPv6Address(source).is_link_local else 0
            self.sock.bind((source, 0, 0, scope))
        except OSError:
            self.sock.close()
            raise
        self.dest = (dest, 0, 0, idx)

    def send(self, packet: bytes) -> None:
        self.sock.sendto(packet, self.dest)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RASender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
