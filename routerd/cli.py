"""routerd's command line.

routerd [run]            run the daemon (the default)
routerd once             print the current state of each interface, exit
routerd status           ask the running daemon for its state and counters
routerd hook CLIENT ...  pass a DHCPv6 client's delegation to the daemon
routerd nudge            tell the daemon to re-read addresses and solicit RAs
routerd schema           print the wire message's JSON Schema
routerd check-config     check a configuration as `run` would, without opening sockets

Every command that reads the configuration takes ``-c/--config FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from routerd import lean

lean.apply()  # before pydantic and paho-mqtt are imported: see routerd/lean.py

from routerd import __version__, logs  # noqa: E402
from routerd import config as cfgmod  # noqa: E402
from routerd.core import dhcpv6, wire  # noqa: E402


def _load(args: argparse.Namespace) -> cfgmod.Config:
    cfg = cfgmod.load(args.config)
    overrides: dict[str, Any] = {}
    if getattr(args, "interface", None):
        overrides["interface"] = tuple(cfgmod.InterfaceSection(name=n) for n in args.interface)
    if getattr(args, "router_id", None):
        overrides["router_id"] = args.router_id
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    if getattr(args, "log_format", None):
        overrides["log_format"] = args.log_format
    if overrides:
        cfg = cfgmod.parse({**cfg.model_dump(exclude_unset=True), **overrides}, "command line")
    return cfg


def control_request(path: Path, req: dict[str, Any]) -> dict[str, Any]:
    """One request to the running daemon's control socket (``routerd status``, hooks, the benchmarks)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        try:
            s.connect(str(path))
        except OSError as e:
            raise SystemExit(
                f"routerd: cannot reach the daemon at {path} ({e.strerror}); is it running?"
            ) from None
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data or b"{}")
    return reply


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket or os.environ.get("ROUTERD_SOCKET"):
        return Path(args.socket or os.environ["ROUTERD_SOCKET"])
    from routerd.daemon import control_path

    return control_path(cfgmod.load(args.config))  # a client: creates no state directory


def _send_delegation(
    args: argparse.Namespace, interface: str, prefixes: tuple[dhcpv6.Delegation, ...]
) -> int:
    reply = control_request(
        _socket_path(args),
        {"op": "delegated", "interface": interface, "prefixes": [[str(p), v, pr] for p, v, pr in prefixes]},
    )
    if not reply.get("ok"):
        print(f"routerd: the daemon refused the delegation: {reply.get('error')}", file=sys.stderr)
        return 1
    return 0


def cmd_hook(args: argparse.Namespace) -> int:
    try:
        if args.client == "odhcp6c":
            if len(args.args) != 2:
                args.usage_error("odhcp6c takes <interface> <state> (PREFIXES from the environment)")
            interface, state = args.args
            found = dhcpv6.odhcp6c(state, os.environ)
        elif args.client == "dhcpcd":
            interface = args.args[0] if args.args else os.environ.get("interface", "")  # noqa: SIM112 - dhcpcd's name
            if not interface:
                args.usage_error("dhcpcd: $interface is not set; pass the interface name")
            found = dhcpv6.dhcpcd(os.environ)
        else:  # ubus
            if len(args.args) not in (1, 2):
                args.usage_error("ubus takes <logical-interface> [<name to publish as>]")
            logical = args.args[0]
            interface = args.args[-1]
            out = subprocess.run(
                ["ubus", "call", f"network.interface.{logical}", "status"],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                raise SystemExit(
                    f"routerd: ubus call network.interface.{logical} status failed: {out.stderr.strip()}"
                )
            found = dhcpv6.ubus_status(json.loads(out.stdout))
    except dhcpv6.HookError as e:
        print(f"routerd hook {args.client}: {e}", file=sys.stderr)
        return 2
    if found is None:
        return 0  # a state that says nothing about delegations
    return _send_delegation(args, interface, found)


def cmd_run(args: argparse.Namespace, once: float | None = None) -> int:
    from routerd.daemon import run

    cfg = _load(args)
    logs.setup(cfg.log_level, cfg.log_format)
    return run(cfg, cfgmod.default_path(args.config), once=once)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Everything `run` checks before it opens a socket: the file, secrets, CA files, interfaces."""
    from routerd.daemon import build_sinks, missing_interfaces, resolve_interfaces, sink_summary

    path = cfgmod.default_path(args.config)
    if path is None:
        raise cfgmod.ConfigError(
            f"no configuration file to check: none given with -c FILE, and {cfgmod.DEFAULT_PATH} does not exist "
            "(routerd run would use its embedded default)"
        )
    cfg = cfgmod.load(path)
    interfaces = resolve_interfaces(cfg)
    build_sinks(cfg)
    print(f"ok: read {path}")
    watched = ", ".join(i.name for i in interfaces)
    print(f"router_id {cfg.router_id}; watching {watched}{'' if cfg.interface else ' (the default route)'}")
    print(sink_summary(cfg))
    missing = missing_interfaces(interfaces)
    if missing:
        print(f"note: {missing}; `routerd run` waits for it to appear")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routerd",
        description="Watch IPv6 prefixes and publish their state.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Without a command routerd runs the daemon: `routerd -i eth0` is `routerd run -i eth0`.\n"
        "`routerd run --help` lists its options (-c/--config FILE, -i/--interface, --router-id,\n"
        "--log-level, --log-format); `routerd COMMAND --help` those of the other commands.",
    )
    p.add_argument("--version", action="version", version=f"routerd {__version__}")
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c", "--config", type=Path, metavar="FILE",
            help=f"TOML or UCI file (default {cfgmod.DEFAULT_PATH} if present, else the embedded default)",
        )  # fmt: skip

    def watching(sp: argparse.ArgumentParser) -> None:
        common(sp)
        sp.add_argument("-i", "--interface", action="append", help="interface to watch (repeatable)")
        sp.add_argument("--router-id", help="router id in topics and messages")
        sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: info")
        sp.add_argument(
            "--log-format", choices=["text", "json"], help="json: one object per line (default text)"
        )

    def controlling(sp: argparse.ArgumentParser) -> None:
        common(sp)
        sp.add_argument("--socket", help="control socket path (default: from the configuration)")

    watching(sub.add_parser("run", help="run the daemon (the default command)"))
    once = sub.add_parser("once", help="print the current state and exit")
    watching(once)
    once.add_argument("--wait", type=float, default=2.0, help="seconds to listen for RAs first (default 2)")
    controlling(sub.add_parser("status", help="show the running daemon's state, sinks and counters"))
    controlling(sub.add_parser("nudge", help="make the daemon re-read addresses and solicit RAs"))
    hook = sub.add_parser("hook", help="pass a DHCPv6 client's delegated prefixes to the daemon")
    hook.set_defaults(usage_error=hook.error)
    controlling(hook)
    hook.add_argument("client", choices=["odhcp6c", "dhcpcd", "ubus"], help="the DHCPv6 client calling")
    hook.add_argument("args", nargs="*", help="odhcp6c: INTERFACE STATE; dhcpcd: [INTERFACE]; "
                      "ubus: LOGICAL-INTERFACE [NAME]")  # fmt: skip
    sub.add_parser("schema", help="print the wire message's JSON Schema")
    check = sub.add_parser("check-config", help="check a configuration as `run` would, opening no sockets")
    check.set_defaults(usage_error=check.error)
    common(check)
    check.add_argument("file", nargs="?", type=Path, help="the same as -c FILE")
    return p


COMMANDS = ("run", "once", "status", "nudge", "hook", "schema", "check-config")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # `routerd -i eth0` means `routerd run -i eth0`
    args = build_parser().parse_args(argv)
    command = args.command
    try:
        if command == "run":
            return cmd_run(args)
        if command == "once":
            return cmd_run(args, once=args.wait)
        if command == "schema":
            print(json.dumps(wire.json_schema(), indent=2, sort_keys=True))
            return 0
        if command == "check-config":
            if args.file is not None and args.config is not None:
                args.usage_error("give the file once: -c FILE or FILE")
            args.config = args.config or args.file
            return cmd_check_config(args)
        if command in ("status", "nudge"):
            reply = control_request(_socket_path(args), {"op": command})
            print(json.dumps(reply, indent=2))
            return 0 if reply.get("ok") else 1
        if command == "hook":
            return cmd_hook(args)
    except cfgmod.ConfigError as e:
        print(f"routerd: {e}", file=sys.stderr)
        return 2
    raise AssertionError(command)
