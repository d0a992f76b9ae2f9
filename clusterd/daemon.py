"""clusterd's main loop: watches, receivers, leader election, health, the controller's worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from clusterd.adapters import kubeconfig
from clusterd.adapters.health import HealthServer
from clusterd.adapters.kube import APISERVICES, CRDS, DYNAMIC_PREFIXES, Kube, Resource, Watcher
from clusterd.adapters.leader import LeaderElector
from clusterd.config import Config, read_secret
from clusterd.controller import Controller
from clusterd.core.lease import Timing
from clusterd.metrics import Metrics
from clusterd.targets import TARGETS, by_kind
from clusterd.targets.base import api_group
from routerd.logs import kv

if TYPE_CHECKING:
    from clusterd.adapters.webhook import WebhookServer

LOG = logging.getLogger("clusterd")
FORBIDDEN_APISERVICES = (
    "Calico's API server (projectcalico.org/v3) goes unnoticed and Calico pools are written through its CRD; "
    "grant list and watch on apiservices.apiregistration.k8s.io (the chart's ClusterRole has them)"
)


class Clusterd:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.kube = Kube(kubeconfig.load(cfg.kubeconfig), cfg.api_timeout, cfg.identity)
        self.controller = Controller(self.kube, cfg, self.metrics)
        self._watchers: list[Watcher] = []
        self._pool_watchers: list[Watcher] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.webhook: WebhookServer | None = None
        self.health: HealthServer | None = None

    def _restart_target_watchers(self, served: dict[str, str]) -> None:
        """Watch each CRD-backed target kind at the version served now."""
        for w in self._pool_watchers:
            w.stop()
        self._pool_watchers = []
        for kind, version in sorted(served.items()):
            t = by_kind(kind)
            watch = self.kube.watch(
                t.plural, Resource(api_group(t, version), version, t.plural), self.controller.on_object(t)
            )
            self._pool_watchers.append(watch)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        ctl = self.controller
        ctl.on_served = self._restart_target_watchers
        # The receivers, then the DynamicPrefix list first: the RA listener sends its Router
        # Solicitation the moment that list names an interface, and the answer (after a random
        # delay of up to 0.5 s, RFC 4861 §6.2.6) usually brings the first prefix.
        receivers = await self._start_receivers()
        self._watchers.append(self.kube.watch("dynamicprefixes", DYNAMIC_PREFIXES, ctl.on_dp))
        self._watchers.append(self.kube.watch("crds", CRDS, ctl.on_crd))
        self._watchers.append(
            self.kube.watch("apiservices", APISERVICES, ctl.on_apiservice, FORBIDDEN_APISERVICES)
        )
        for built_in in (t for t in TARGETS if not t.crd):  # always served, one version
            resource = Resource(built_in.group, built_in.versions[0], built_in.plural)
            self._watchers.append(self.kube.watch(built_in.plural, resource, ctl.on_object(built_in)))
        self._tasks.append(asyncio.create_task(ctl.run(), name="controller"))
        self.health = HealthServer(self.cfg.health_listen, ctl.ready, self.metrics, ctl.leading)
        await self.health.start()
        elector = None
        if self.cfg.leader_election.enabled:
            le = self.cfg.leader_election
            timing = Timing(le.lease_duration, le.deadline, le.retry_period)
            elector = LeaderElector(self.kube, self.cfg.namespace, le.lease_name, self.cfg.identity, timing,
                                    ctl.set_leader)  # fmt: skip
            election = asyncio.create_task(elector.run(), name="leader-election")
            self._tasks.append(election)
        else:
            self.metrics.leader.set(1)
        LOG.info(
            "clusterd running", extra=kv(identity=self.cfg.identity, leader_election=elector is not None)
        )
        await self._stop.wait()
        LOG.info("stopping")
        for r in receivers:
            with contextlib.suppress(Exception):
                await r.stop()  # type: ignore[attr-defined]
        if elector is not None:
            election.cancel()  # a renewal after the release would take the Lease back
            await elector.release()
        for w in self._watchers + self._pool_watchers:
            w.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.health.stop()
        self.kube.close()
        return 0

    async def _start_receivers(self) -> list[object]:
        cfg, ctl = self.cfg, self.controller
        started: list[object] = []
        if cfg.mqtt is not None:
            from clusterd.adapters.mqtt import MQTTReceiver

            m = cfg.mqtt
            password = read_secret(m.password_file, m.password_env, "MQTT password") if (
                m.password_file or m.password_env) else None  # fmt: skip
            mqtt = MQTTReceiver(
                m, m.client_id or f"clusterd-{cfg.identity}", password, ctl.submit, self.metrics
            )
            await mqtt.start()
            started.append(mqtt)
        if cfg.webhook is not None:
            from clusterd.adapters.webhook import WebhookServer  # aiohttp: only with a webhook

            w = cfg.webhook
            secrets = [read_secret(f, None, "webhook secret").encode() for f in w.secret_files]
            if w.secret_env:
                secrets.append(read_secret(None, w.secret_env, "webhook secret").encode())
            self.webhook = WebhookServer(w, secrets, ctl.submit_webhook, self.metrics, cfg.allow_ula)
            await self.webhook.start()
            started.append(self.webhook)
        if cfg.ra_fallback:
            from clusterd.adapters.ra import RAListener

            ra = RAListener(ctl.submit, cfg.allow_ula)
            ctl.ra_available = True

            def want(interfaces: set[str]) -> None:
                ra.want(interfaces)
                ctl.ra_available = ra.available

            ctl.on_ra_interfaces = want
            started.append(_Closer(ra.close))
        return started


class _Closer:
    def __init__(self, fn: object) -> None:
        self.fn = fn

    async def stop(self) -> None:
        self.fn()  # type: ignore[operator]


def run(cfg: Config) -> int:
    return asyncio.run(Clusterd(cfg).run())
