"""The DynamicPrefix spec: what the user asks for (a superset of the Go operator's schema)."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GROUP = "dynamic-prefix.io"
VERSION = "v1alpha1"
PLURAL = "dynamicprefixes"
KIND = "DynamicPrefix"

DNSName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
Suffix = Annotated[str, Field(min_length=2, max_length=39)]


class Model(BaseModel):
    """The base of the resource's models: unknown keys refused, field names or aliases, frozen."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RouterAdvertisementSource(Model):
    """Listen for Router Advertisements in the cluster (clusterd needs hostNetwork and NET_RAW)."""

    interface: str = Field(min_length=1, max_length=15, description="Node interface to listen on.")
    enabled: bool = Field(False, description="Turn the in-cluster RA listener on.")
    fallback_after_seconds: int | None = Field(
        None,
        alias="fallbackAfterSeconds",
        ge=0,
        description="With a routerd source too: use RAs only while no routerd message is newer than this.",
    )


class DHCPv6PDSource(Model):
    """Accepted for compatibility with the Go operator's manifests; clusterd is not a DHCPv6 client.

    Run routerd on the router with its DHCPv6 hook instead (docs/quickstart-*.md).
    """

    interface: str | None = Field(None, max_length=15)
    requested_prefix_length: int | None = Field(None, alias="requestedPrefixLength", ge=48, le=64)


class RouterdSource(Model):
    """Take the prefix from routerd's messages (MQTT and/or the signed webhook)."""

    router: str = Field(min_length=1, max_length=64, description="routerd's router_id.")
    interface: str = Field(
        min_length=1, max_length=64, description="The interface name in routerd's messages."
    )
    transports: list[Literal["mqtt", "webhook"]] = Field(
        ["mqtt", "webhook"], min_length=1, max_length=2, description="Which transports may deliver it."
    )
    prefix_length: int | None = Field(
        None, alias="prefixLength", ge=1, le=64, description="Only use prefixes of this length."
    )


class Acquisition(Model):
    """Where the prefix comes from (at least one source)."""

    router_advertisement: RouterAdvertisementSource | None = Field(None, alias="routerAdvertisement")
    dhcpv6pd: DHCPv6PDSource | None = None
    routerd: RouterdSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Acquisition:
        if self.router_advertisement is None and self.dhcpv6pd is None and self.routerd is None:
            raise ValueError("set at least one of routerAdvertisement, dhcpv6pd or routerd")
        return self


class AddressRange(Model):
    """A range of host suffixes reserved for the cluster (the router must not hand them out)."""

    name: DNSName
    start: Suffix = Field(description="First suffix, e.g. ::f000:0:0:0.")
    end: Suffix = Field(description="Last suffix, e.g. ::ffff:ffff:ffff:ffff.")

    @field_validator("start", "end")
    @classmethod
    def _ipv6(cls, v: str) -> str:
        try:
            IPv6Address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv6 suffix like ::f000:0:0:0") from None
        return v

    @model_validator(mode="after")
    def _ordered(self) -> AddressRange:
        if IPv6Address(self.start) > IPv6Address(self.end):
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class BGP(Model):
    advertise: bool = False
    community: str | None = Field(None, max_length=64)


class Subnet(Model):
    """A subnet carved from a larger prefix: the ``offset``-th /``prefixLength``."""

    name: DNSName
    offset: int = Field(ge=0, le=2**32)
    prefix_length: int = Field(alias="prefixLength", ge=48, le=128)
    bgp: BGP | None = None


class Transition(Model):
    """How a renumbering is carried out."""

    mode: Literal["simple", "ha"] = Field(
        "simple",
        description="simple: pools keep old blocks; ha: Services also keep old addresses, DNS moves.",
    )
    max_prefix_history: int = Field(
        2, alias="maxPrefixHistory", ge=1, le=10, description="Previous prefixes kept."
    )


class DynamicPrefixSpec(Model):
    acquisition: Acquisition
    address_ranges: list[AddressRange] = Field([], alias="addressRanges", max_length=32)
    subnets: list[Subnet] = Field([], max_length=64)
    transition: Transition = Field(default_factory=Transition)

    @model_validator(mode="after")
    def _unique_names(self) -> DynamicPrefixSpec:
        for what, names in (("addressRanges", [r.name for r in self.address_ranges]),
                            ("subnets", [s.name for s in self.subnets])):  # fmt: skip
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be unique")
        return self
