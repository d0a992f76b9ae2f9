"""clusterd's configuration: a YAML file (the Helm chart renders it), validated by pydantic.

Errors name the key and what to do. Secrets are read from files (mounted
Secrets) or environment variables, never from the file itself, and are never
logged. The reference is generated into docs/configuration.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from routerd.settings import ConfigError, one_source, read_secret, validated

__all__ = ["Config", "ConfigError", "load", "read_secret"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MQTTSection(_Section):
    """Subscribe to routerd's retained state."""

    host: str = Field(min_length=1, description="Broker host name or address.")
    port: int | None = Field(None, ge=1, le=65535, description="Default 8883 with TLS, 1883 without.")
    tls: bool = Field(True, description="Use TLS and verify the broker's certificate.")
    ca_file: Path | None = Field(
        None, alias="caFile", description="CA bundle for the broker (default: system)."
    )
    username: str | None = Field(None, description="MQTT user name.")
    password_file: Path | None = Field(
        None, alias="passwordFile", description="File holding the MQTT password."
    )
    password_env: str | None = Field(
        None, alias="passwordEnv", description="Variable holding the MQTT password."
    )
    base_topic: str = Field(
        "dynamic-prefix", alias="baseTopic", pattern=r"^[^#+]+$", description="Topic base."
    )
    client_id: str | None = Field(None, alias="clientId", description="Default: clusterd-<pod name>.")
    keepalive: int = Field(30, ge=5, le=3600, description="Seconds.")

    @model_validator(mode="after")
    def _one_password_source(self) -> MQTTSection:
        one_source({"passwordFile": self.password_file, "passwordEnv": self.password_env}, "MQTT password",
                   required=False)  # fmt: skip
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls else 1883)


class WebhookSection(_Section):
    """Receive routerd's signed POSTs."""

    listen: str = Field("0.0.0.0:8443", description="host:port to listen on.")
    path: str = Field("/v1/prefix-state", pattern=r"^/", description="URL path routerd posts to.")
    cert_file: Path | None = Field(None, alias="certFile", description="TLS certificate (unset: plain HTTP).")
    key_file: Path | None = Field(None, alias="keyFile", description="TLS key.")
    secret_files: list[Path] = Field(
        [],
        alias="secretFiles",
        description="Files each holding an accepted HMAC secret (two during rotation).",
    )
    secret_env: str | None = Field(None, alias="secretEnv", description="Variable holding the HMAC secret.")
    timestamp_window: int = Field(
        300, alias="timestampWindow", ge=10, le=3600, description="Seconds of clock skew."
    )
    max_body_bytes: int = Field(
        65536, alias="maxBodyBytes", ge=1024, le=1 << 20, description="Larger bodies get 413."
    )

    @model_validator(mode="after")
    def _secret(self) -> WebhookSection:
        if not self.secret_files and not self.secret_env:
            raise ValueError("set secretFiles or secretEnv: the webhook refuses unsigned requests")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("set both certFile and keyFile, or neither")
        return self


class LeaderElectionSection(_Section):
    """Run several replicas; only the one holding the Lease writes.

    Replicas never compare the Lease's timestamps with their own clocks (they may be off by
    any amount): a follower times, on its own clock, how long the Lease has gone unchanged.
    """

    enabled: bool = Field(False, description="Elect a leader (needed with more than one replica).")
    lease_name: str = Field("dynamic-prefix-clusterd", alias="leaseName", description="Lease object name.")
    lease_duration: int = Field(
        15,
        alias="leaseDuration",
        gt=1,
        description="Whole seconds a follower waits on an unchanged Lease before it takes over.",
    )
    renew_deadline: float | None = Field(
        None,
        alias="renewDeadline",
        gt=0,
        description="Seconds the leader goes on without a successful renewal before it stops leading; "
        "shorter than leaseDuration (default: two thirds of it). leaseDuration / renewDeadline is how "
        "much faster one replica's clock may run than another's.",
    )
    retry_period: float = Field(
        2.0, alias="retryPeriod", gt=0, description="Seconds between renewals and between a follower's looks."
    )

    @model_validator(mode="after")
    def _order(self) -> LeaderElectionSection:
        if self.deadline >= self.lease_duration:
            raise ValueError(
                f"renewDeadline ({self.deadline:g}) must be shorter than leaseDuration ({self.lease_duration}): "
                "the leader must stop before a follower may take over"
            )
        if self.retry_period >= self.deadline:
            raise ValueError(
                f"retryPeriod ({self.retry_period:g}) must be shorter than renewDeadline ({self.deadline:g}): "
                "the leader needs more than one try to renew"
            )
        return self

    @property
    def deadline(self) -> float:
        """renewDeadline, or two thirds of leaseDuration (client-go's 10 s of 15 s)."""
        return self.renew_deadline if self.renew_deadline is not None else self.lease_duration * 2 / 3


class Config(_Section):
    """The whole file."""

    kubeconfig: Path | None = Field(
        None, description="Default: in-cluster service account, else ~/.kube/config."
    )
    namespace: str = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE", "dynamic-prefix"),
        description="Namespace for the Lease and Events (default: $POD_NAMESPACE).",
    )
    identity: str = Field(
        default_factory=lambda: os.environ.get("POD_NAME") or os.uname().nodename,
        description="This replica's name in the Lease (default: $POD_NAME).",
    )
    api_timeout: float = Field(
        60.0,
        alias="apiTimeout",
        ge=1,
        le=3600,
        description="Seconds: a call to the API server unanswered this long fails and is retried; the server "
        "ends each watch after this long and a watch silent a little longer (at most 15 s more: a dead "
        "connection) is started again.",
    )
    health_listen: str = Field(
        "0.0.0.0:8080", alias="healthListen", description="/healthz, /readyz, /metrics."
    )
    mqtt: MQTTSection | None = None
    webhook: WebhookSection | None = None
    ra_fallback: bool = Field(
        False,
        alias="raFallback",
        description="Listen for RAs for DynamicPrefixes that enable it (hostNetwork, NET_RAW).",
    )
    allow_ula: bool = Field(False, alias="allowULA", description="Accept unique-local prefixes (fc00::/7).")
    service_ip_annotation: Literal["cilium", "metallb"] = Field(
        "cilium",
        alias="serviceIPAnnotation",
        description="HA mode: lbipam.cilium.io/ips or metallb.io/loadBalancerIPs, unless a Service says otherwise.",
    )
    service_ha_mode: Literal["auto", "companion", "addresses"] = Field(
        "auto",
        alias="serviceHAMode",
        description="HA mode: keep old addresses on the Service itself (addresses) or on a companion Service "
        "per draining prefix (companion); auto: companion on MetalLB, addresses on Cilium. A Service's "
        "dynamic-prefix.io/ha-mode says otherwise.",
    )
    leader_election: LeaderElectionSection = Field(
        default_factory=LeaderElectionSection, alias="leaderElection"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", alias="logLevel", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        "json", alias="logFormat", description="json: one object per line."
    )


def parse(doc: dict[str, Any], origin: str = "configuration") -> Config:
    return validated(Config, doc, origin)


def load(path: Path | None) -> Config:
    if path is None:
        return parse({})
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return parse(doc, str(path))
