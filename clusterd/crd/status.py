"""The DynamicPrefix status: what clusterd found and derived (the planner's only memory)."""

from __future__ import annotations

from ipaddress import IPv6Network
from typing import Annotated, Any, Literal

from pydantic import Field

from clusterd.crd.spec import Model

Time = Annotated[str, Field(max_length=40, description="RFC 3339 time.")]
MAX_PRUNED = 80
"""Bound of status.pruned: the 64 prefixes one message may list, plus what plans without a
message can prune from a history of at most 11 before the next message trims the list."""


class RangeStatus(Model):
    name: str
    start: str
    end: str
    cidrs: list[str] = Field(description="The exact CIDR set covering start..end.")


class SubnetStatus(Model):
    name: str
    cidr: str


class HistoryEntry(Model):
    prefix: str
    acquired_at: Time = Field(alias="acquiredAt")
    deprecated_at: Time | None = Field(None, alias="deprecatedAt")
    valid_until: Time | None = Field(None, alias="validUntil", description="null: infinite.")
    state: Literal["active", "draining", "expired"]


class SourceStatus(Model):
    """The message the status was last computed from (it orders later ones, across restarts)."""

    kind: Literal["routerd", "router-advertisement"]
    router: str | None = None
    interface: str | None = None
    transport: Literal["mqtt", "webhook", "raw-socket"] | None = None
    boot: str | None = None
    sequence: int | None = None
    received_at: Time | None = Field(
        None,
        alias="receivedAt",
        description="When the message was published: its arrival, or earlier for a retained MQTT message"
        " (unset when its age is unknown).",
    )
    previous_boots: list[Annotated[str, Field(max_length=16)]] = Field(
        [],
        alias="previousBoots",
        max_length=8,
        description="Earlier routerd runs: their messages are refused.",
    )


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: Time = Field(alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class DynamicPrefixStatus(Model):
    current_prefix: str | None = Field(None, alias="currentPrefix")
    prefix_source: str | None = Field(None, alias="prefixSource")
    lease_expires_at: Time | None = Field(None, alias="leaseExpiresAt")
    address_ranges: list[RangeStatus] = Field([], alias="addressRanges")
    subnets: list[SubnetStatus] = Field([])
    history: list[HistoryEntry] = Field([])
    pruned: list[Annotated[str, Field(max_length=43)]] = Field(
        [],
        max_length=MAX_PRUNED,
        description="Previous prefixes dropped by maxPrefixHistory that the source still lists:"
        " they stay out of the history (and the pools) until it stops listing them.",
    )
    source: SourceStatus | None = None
    routerd_source: SourceStatus | None = Field(
        None,
        alias="routerdSource",
        description="While RAs supply the prefix: the last routerd message applied, which still"
        " orders routerd's later messages.",
    )
    observed_generation: int | None = Field(None, alias="observedGeneration")
    conditions: list[Condition] = Field([])

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @property
    def prefix(self) -> IPv6Network | None:
        return IPv6Network(self.current_prefix) if self.current_prefix else None
