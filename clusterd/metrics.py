"""Prometheus metrics (served on /metrics of the health port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """One registry per process (tests make their own)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "dynamic_prefix_messages", "Prefix-state messages received, by transport and result.",
            ["transport", "result"], registry=r,
        )  # fmt: skip
        self.last_message = Gauge(
            "dynamic_prefix_last_message_timestamp_seconds", "When the last message of a stream arrived.",
            ["router", "interface"], registry=r,
        )  # fmt: skip
        self.prefix_changes = Counter(
            "dynamic_prefix_changes", "Current-prefix changes applied.", ["dynamicprefix"], registry=r
        )
        self.reconcile_errors = Counter(
            "dynamic_prefix_reconcile_errors", "Reconcile attempts that failed (they are retried).", ["kind"],
            registry=r,
        )  # fmt: skip
        self.reconcile_seconds = Histogram(
            "dynamic_prefix_reconcile_duration_seconds", "Time to reconcile one DynamicPrefix and its pools.",
            registry=r,
        )  # fmt: skip
        self.pool_syncs = Counter(
            "dynamic_prefix_pool_syncs",
            "Pool, CIDR group and NetworkPolicy (pool: namespace/name) sync steps (grow before the Services, "
            "shrink after), by result (written, unchanged, failed).",
            ["kind", "pool", "result"], registry=r,
        )  # fmt: skip
        self.service_syncs = Counter(
            "dynamic_prefix_service_syncs",
            "Service annotation syncs in HA mode, by result.",
            ["result"],
            registry=r,
        )
        self.api_writes = Counter(
            "dynamic_prefix_api_writes",
            "Writes to the Kubernetes API, by what was written (status, pool, service, networkpolicy).",
            ["resource"],
            registry=r,
        )
        self.leader = Gauge("dynamic_prefix_leader", "1 while this replica holds the Lease.", registry=r)
