"""Run the real clusterd as a process against the test apiserver, broker and webhook port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.ground.apiserver import KubeAPI, env_without_proxy
from tests.ground.ports import free_port
from tests.ground.waiting import wait_for_line

WEBHOOK_SECRET = b"clusterd-test-webhook-secret-0123456789"


class Clusterd:
    """clusterd started with ``python -m clusterd`` and a generated configuration."""

    def __init__(
        self,
        kube: KubeAPI,
        workdir: Path,
        *,
        mqtt_port: int | None = None,
        webhook: bool = True,
        leader_election: bool = False,
        identity: str = "clusterd-0",
        lease_duration: int = 4,
        token: str | None = None,
        extra: dict[str, Any] | None = None,
        netns: str | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.identity = identity
        self.secret_file = workdir / "webhook.key"  # WEBHOOK_SECRET: a webhook sender signs with it too
        self.secret_file.write_bytes(WEBHOOK_SECRET)
        self.health_port = free_port()
        self.webhook_port = free_port() if webhook else None
        cfg: dict[str, Any] = {
            "kubeconfig": str(kube.kubeconfig(workdir / "kubeconfig", token=token)),
            "namespace": "dynamic-prefix",
            "identity": identity,
            "healthListen": f"127.0.0.1:{self.health_port}",
            "logFormat": "text",
            "logLevel": "debug",
            "leaderElection": {
                "enabled": leader_election,
                "leaseDuration": lease_duration,
                "retryPeriod": 0.5,
            },
        }
        if mqtt_port is not None:
            cfg["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "tls": False}
        if webhook:
            cfg["webhook"] = {
                "listen": f"127.0.0.1:{self.webhook_port}",
                "secretFiles": [str(self.secret_file)],
            }
        cfg.update(extra or {})
        self.config_path = workdir / "clusterd.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        argv = [*wrap, sys.executable, "-m", "clusterd", "run", "--config", str(self.config_path)]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.log_lines: list[str] = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env_without_proxy())  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.log_lines.append(raw.decode(errors="replace").rstrip())

    def log(self) -> str:
        return "\n".join(self.log_lines)

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/v1/prefix-state"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def metric(self, name: str, **labels: str) -> float:
        """A Prometheus sample from /metrics, summed over the series that carry ``labels``."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clusterd exited {self.proc.returncode}:\n{self.log()}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"clusterd not ready within {timeout}s:\n{self.log()[-4000:]}")

    def wait_log(self, fragment: str, timeout: float = 20.0) -> None:
        wait_for_line(self.log_lines, fragment, timeout, "clusterd")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)
