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
from kubernetes import client as k8s

from tests.ground.apiserver import KubeAPI, env_without_proxy
from tests.ground.messages import post_state, prefix, state
from tests.ground.ports import free_port
from tests.ground.waiting import wait_for_line, wait_until

WEBHOOK_SECRET = b"clusterd-test-webhook-secret-0123456789"
DP = ("dynamic-prefix.io", "v1alpha1", "dynamicprefixes")


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
        self.webhook_port = free_port()  # listened on only with ``webhook``
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
        self.started_at = time.monotonic()  # just before the process starts (benchmarks time from here)
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


class Barrier:
    """Wait until clusterd has finished every reconcile queued before now, its writes made and counted.

    clusterd reconciles one key at a time, in the order the keys were queued,
    and its webhook answers a message from inside the reconcile that message
    started. So the answer to a message posted now means that every reconcile
    queued before it ran to its end. The message goes to a DynamicPrefix of
    the barrier's own, without pools or Services, and repeats the state it
    already holds with a new sequence: a heartbeat, which writes nothing (each
    wait checks the DynamicPrefix was not written by the time of the answer),
    so the barrier adds nothing to the writes a test counts, and leaves no
    reconcile of its own queued that a later message could be answered from.
    The clusterd needs its webhook.
    """

    PREFIX = "2001:db8:ba::/64"

    def __init__(self, kube: KubeAPI, cd: Clusterd, name: str = "barrier") -> None:
        self.cd, self.name, self.router = cd, name, f"{name}-router"
        self._custom = k8s.CustomObjectsApi(kube.admin())
        self._sequence = 0
        self.answer = ""
        self._custom.create_cluster_custom_object(*DP, {
            "apiVersion": "dynamic-prefix.io/v1alpha1", "kind": "DynamicPrefix", "metadata": {"name": name},
            "spec": {"acquisition": {"routerd": {"router": self.router, "interface": "lan"}},
                     "transition": {"mode": "ha", "maxPrefixHistory": 2}}})  # fmt: skip
        # clusterd answers 202 until its watch has brought the new DynamicPrefix.
        wait_until(lambda: self._post() == 200, 30, "clusterd to take the barrier's DynamicPrefix")
        # The reconciles that wrote its first status (and their echoes) end before the next answer.
        wait_until(self._quiet, 30, "the barrier's DynamicPrefix to settle")

    def _post(self) -> int:
        self._sequence += 1
        msg = state(self.router, "lan", self._sequence, prefix(self.PREFIX))
        code, self.answer = post_state(self.cd.webhook_url, WEBHOOK_SECRET, msg)
        return code

    def _version(self) -> str:
        return str(self._custom.get_cluster_custom_object(*DP, self.name)["metadata"]["resourceVersion"])

    def _quiet(self) -> bool:
        """Post a heartbeat; True if it was answered and wrote nothing."""
        before = self._version()
        code = self._post()
        assert code == 200, f"the barrier's heartbeat was answered {code}: {self.answer}"
        return self._version() == before

    def wait(self) -> None:
        assert self._quiet(), "the barrier's heartbeat wrote its DynamicPrefix: it would be counted"
