"""Run the real routerd as a process (in a lab namespace) and read what it prints."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.ground.netlab import Lab
from tests.ground.waiting import wait_for_line


class Routerd:
    """routerd started with ``python -m routerd`` so the test's environment is the one used."""

    def __init__(
        self,
        lab: Lab | None,
        workdir: Path,
        config: str | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        wrap: Sequence[str] | None = None,
        python: str | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.config_path = workdir / "routerd.toml"
        argv = [*(wrap or []), python or sys.executable, "-m", "routerd", "run"]
        if config is not None:
            self.config_path.write_text(config)
            argv += ["--config", str(self.config_path)]
        argv += list(args)
        full_env = {**os.environ, "XDG_STATE_HOME": str(workdir / "state"), **(env or {})}
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr_lines: list[str] = []
        if lab is not None:
            self.proc = lab.popen(
                lab.host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env
            )
        else:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, start_new_session=True
            )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                self.stderr_lines.append("stdout (not JSON): " + raw.decode(errors="replace"))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_lines.append(raw.decode(errors="replace").rstrip())

    def log(self) -> str:
        return "\n".join(self.stderr_lines)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The first printed state satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if predicate(msg):
                return msg
        raise TimeoutError(f"routerd printed no matching state within {timeout}s; its log:\n{self.log()}")

    def wait_log(self, fragment: str, timeout: float = 20.0) -> None:
        wait_for_line(self.stderr_lines, fragment, timeout, "routerd")

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()
        return int(self.proc.returncode)


QUIET_LO = """[stdout]
enabled = false
[[interface]]
name = "lo"
ra = false
netlink = false
"""
"""routerd.toml tables for a routerd that needs no root: it watches ``lo`` with RA and netlink off
and publishes that interface once after start, which is all a sink needs to have something to do."""


def current(msg: dict[str, Any]) -> str | None:
    """The first preferred prefix of a state message (what a consumer would use)."""
    return next((p["prefix"] for p in msg["prefixes"] if p["state"] == "preferred"), None)


def states(msg: dict[str, Any]) -> dict[str, str]:
    return {p["prefix"]: p["state"] for p in msg["prefixes"]}


def routerd_toml(
    interface: str,
    *,
    router_id: str = "edge",
    hold_down: float = 0.2,
    heartbeat: float | None = None,
    netlink: bool = False,
    stdout: bool | None = None,
    mqtt_port: int | None = None,
    webhook_url: str | None = None,
    webhook_secret_file: Path | None = None,
    control_socket: Path | None = None,
    allowed_routers: Sequence[str] = (),
) -> str:
    """A routerd.toml for one interface with the common sinks (labs, benchmarks, the demo)."""
    lines = [f'router_id = "{router_id}"']
    if control_socket is not None:
        lines.append(f'control_socket = "{control_socket}"')
    lines += ["[publish]", f"hold_down = {hold_down}"]
    if heartbeat is not None:
        lines.append(f"heartbeat = {heartbeat}")
    if stdout is not None:
        lines += ["[stdout]", f"enabled = {str(stdout).lower()}"]
    lines += ["[[interface]]", f'name = "{interface}"', f"netlink = {str(netlink).lower()}"]
    if allowed_routers:
        lines.append("allowed_routers = [" + ", ".join(f'"{r}"' for r in allowed_routers) + "]")
    if mqtt_port is not None:
        lines += ["[mqtt]", 'host = "127.0.0.1"', f"port = {mqtt_port}", "tls = false"]
    if webhook_url is not None:
        lines += ["[[webhook]]", f'url = "{webhook_url}"', f'secret_file = "{webhook_secret_file}"']
        if webhook_url.startswith("http://"):
            lines.append("allow_insecure = true  # clusterd on the lab's loopback link")
    return "\n".join(lines) + "\n"
