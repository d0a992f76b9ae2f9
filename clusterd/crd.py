"""The DynamicPrefix resource (dynamic-prefix.io/v1alpha1): pydantic models and the CRD made from them.

A superset of the Go dynamic-prefix-operator's schema, so its manifests apply
unchanged. ``manifests/crds/dynamic-prefix.io_dynamicprefixes.yaml`` is
generated from these models (``clusterd crd``); a test fails when it drifts.

The CRD carries CEL rules the API server enforces before clusterd ever sees an
object: at least one acquisition source, range start <= end, suffixes confined
to host bits; range and subnet names are unique because the lists are maps
keyed by name.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GROUP = "dynamic-prefix.io"
VERSION = "v1alpha1"
PLURAL = "dynamicprefixes"
KIND = "DynamicPrefix"

DNSName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
Suffix = Annotated[str, Field(min_length=2, max_length=39)]
Time = Annotated[str, Field(max_length=40, description="RFC 3339 time.")]
MAX_PRUNED = 80
"""Bound of status.pruned: the 64 prefixes one message may list, plus what plans without a
message can prune from a history of at most 11 before the next message trims the list."""


def _not_after(a: str, b: str) -> str:
    """CEL: IPv6 address ``a`` <= ``b``, with only the CIDR library (CEL cannot order IPs).

    a > b exactly when, at the first bit k where they differ, a has a 1: their
    first k-1 bits agree (b is in a's /(k-1)), b is not in a's /k, and a's /k
    block does not start where its /(k-1) block starts.
    """
    # Prefix lengths come from a list of string literals indexed by k: string(int)
    # and nested list literals have no size bound for the API server's cost
    # estimator, and it refuses rules it cannot bound.
    lengths = "[" + ", ".join(f"'/{k}'" for k in range(129)) + "]"
    ks = "[" + ", ".join(str(k) for k in range(1, 129)) + "]"
    shorter, longer = f"cidr({a} + {lengths}[k - 1])", f"cidr({a} + {lengths}[k])"
    differs_with_a_one = (
        f"{shorter}.containsIP({b}) && !{longer}.containsIP({b})"
        f" && !{longer}.containsIP({shorter}.masked().ip())"
    )
    return f"!{ks}.exists(k, {differs_with_a_one})"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RouterAdvertisementSource(_Model):
    """Listen for Router Advertisements in the cluster (clusterd needs hostNetwork and NET_RAW)."""

    interface: str = Field(min_length=1, max_length=15, description="Node interface to listen on.")
    enabled: bool = Field(False, description="Turn the in-cluster RA listener on.")
    fallback_after_seconds: int | None = Field(
        None,
        alias="fallbackAfterSeconds",
        ge=0,
        description="With a routerd source too: use RAs only while no routerd message is newer than this.",
    )


class DHCPv6PDSource(_Model):
    """Accepted for compatibility with the Go operator's manifests; clusterd is not a DHCPv6 client.

    Run routerd on the router with its DHCPv6 hook instead (docs/quickstart-*.md).
    """

    interface: str | None = Field(None, max_length=15)
    requested_prefix_length: int | None = Field(None, alias="requestedPrefixLength", ge=48, le=64)


class RouterdSource(_Model):
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


class Acquisition(_Model):
    """Where the prefix comes from (at least one source)."""

    router_advertisement: RouterAdvertisementSource | None = Field(None, alias="routerAdvertisement")
    dhcpv6pd: DHCPv6PDSource | None = None
    routerd: RouterdSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Acquisition:
        if self.router_advertisement is None and self.dhcpv6pd is None and self.routerd is None:
            raise ValueError("set at least one of routerAdvertisement, dhcpv6pd or routerd")
        return self


class AddressRange(_Model):
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


class BGP(_Model):
    advertise: bool = False
    community: str | None = Field(None, max_length=64)


class Subnet(_Model):
    """A subnet carved from a larger prefix: the ``offset``-th /``prefixLength``."""

    name: DNSName
    offset: int = Field(ge=0, le=2**32)
    prefix_length: int = Field(alias="prefixLength", ge=48, le=128)
    bgp: BGP | None = None


class Transition(_Model):
    """How a renumbering is carried out."""

    mode: Literal["simple", "ha"] = Field(
        "simple",
        description="simple: pools keep old blocks; ha: Services also keep old addresses, DNS moves.",
    )
    max_prefix_history: int = Field(
        2, alias="maxPrefixHistory", ge=1, le=10, description="Previous prefixes kept."
    )


class DynamicPrefixSpec(_Model):
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


# -- status ---------------------------------------------------------------------------------


class RangeStatus(_Model):
    name: str
    start: str
    end: str
    cidrs: list[str] = Field(description="The exact CIDR set covering start..end.")


class SubnetStatus(_Model):
    name: str
    cidr: str


class HistoryEntry(_Model):
    prefix: str
    acquired_at: Time = Field(alias="acquiredAt")
    deprecated_at: Time | None = Field(None, alias="deprecatedAt")
    valid_until: Time | None = Field(None, alias="validUntil", description="null: infinite.")
    state: Literal["active", "draining", "expired"]


class SourceStatus(_Model):
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


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: Time = Field(alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


MAX_TARGETS = 100
"""Bound of status.targets: objects with a problem first; the conditions count every one."""


class TargetStatus(_Model):
    """One object clusterd keeps in step for this DynamicPrefix, and whether it is."""

    kind: str = Field(max_length=63)
    api_version: str = Field(alias="apiVersion", max_length=316)
    name: str = Field(max_length=253)
    namespace: str | None = Field(None, max_length=63)
    synced: bool = Field(description="In step; else ``problem`` says why.")
    problem: str | None = Field(None, max_length=1024)


class DynamicPrefixStatus(_Model):
    current_prefix: str | None = Field(None, alias="currentPrefix")
    prefix_source: str | None = Field(None, alias="prefixSource")
    lease_expires_at: Time | None = Field(None, alias="leaseExpiresAt")
    address_ranges: list[RangeStatus] = Field([], alias="addressRanges")
    subnets: list[SubnetStatus] = []
    history: list[HistoryEntry] = []
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
    conditions: list[Condition] = []
    targets: list[TargetStatus] = Field(
        [],
        max_length=MAX_TARGETS,
        description="The objects clusterd keeps for this DynamicPrefix (pools, CIDR groups, BGP"
        f" advertisements, HA Services), those with a problem first; at most {MAX_TARGETS}.",
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @property
    def prefix(self) -> IPv6Network | None:
        return IPv6Network(self.current_prefix) if self.current_prefix else None


# -- the CRD ----------------------------------------------------------------------------------


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """pydantic's JSON Schema -> a Kubernetes structural schema (no $ref, no nullable anyOf)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {schema} structurally")
        out.update(_structural(options[0], defs))
        if any(o.get("type") == "null" for o in schema["anyOf"]):
            out["nullable"] = True
    for key in ("type", "description", "minimum", "maximum", "minLength", "maxLength", "pattern",
                "minItems", "maxItems", "enum", "format"):  # fmt: skip
        if key in schema:
            out[key] = schema[key]
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if "default" in schema and schema["default"] is not None:
        out["default"] = schema["default"]
    if schema.get("type") == "object" and "properties" in schema:
        out["properties"] = {k: _structural(v, defs) for k, v in schema["properties"].items()}
        if schema.get("required"):
            out["required"] = sorted(schema["required"])
    if schema.get("type") == "array" and "items" in schema:
        out["items"] = _structural(schema["items"], defs)
    for k, v in schema.items():
        if k.startswith("x-kubernetes-"):
            out[k] = v
    return out


def _spec_schema() -> dict[str, Any]:
    raw = DynamicPrefixSpec.model_json_schema(by_alias=True)
    spec = _structural(raw, raw.get("$defs", {}))
    spec.pop("description", None)

    # A suffix fills host bits only: within the prefix length routerd's prefixes are filtered
    # to, else the requested delegation length, else ::/64 (SLAAC links; it fits any prefix).
    def lengths(first: int) -> str:
        return "[" + ", ".join(f"'::/{n}'" for n in range(first, 65)) + "]"

    host_part = (
        "cidr(has(self.acquisition.routerd) && has(self.acquisition.routerd.prefixLength)"
        f" ? {lengths(1)}[self.acquisition.routerd.prefixLength - 1]"
        " : has(self.acquisition.dhcpv6pd) && has(self.acquisition.dhcpv6pd.requestedPrefixLength)"
        f" ? {lengths(48)}[self.acquisition.dhcpv6pd.requestedPrefixLength - 48]"
        " : '::/64')"
    )

    def within(x: str) -> str:
        return f"{host_part}.containsIP({x})"

    spec["x-kubernetes-validations"] = [
        {
            "rule": "has(self.acquisition.routerAdvertisement) || has(self.acquisition.dhcpv6pd)"
            " || has(self.acquisition.routerd)",
            "message": "set at least one acquisition source: routerAdvertisement, dhcpv6pd or routerd",
        },
        {
            "rule": "!has(self.addressRanges) || self.addressRanges.all(r, !isIP(r.start) || !isIP(r.end)"
            f" || ({within('r.start')} && {within('r.end')}))",
            "message": "address range suffixes must only set host bits (within ::/64, or within"
            " routerd.prefixLength or dhcpv6pd.requestedPrefixLength when set)",
        },
    ]
    ranges = spec["properties"]["addressRanges"]
    ranges["x-kubernetes-list-type"] = "map"
    ranges["x-kubernetes-list-map-keys"] = ["name"]
    ranges["items"]["x-kubernetes-validations"] = [
        {
            "rule": "isIP(self.start) && ip(self.start).family() == 6",
            "message": "start must be an IPv6 suffix",
        },
        {"rule": "isIP(self.end) && ip(self.end).family() == 6", "message": "end must be an IPv6 suffix"},
        {
            "rule": "!isIP(self.start) || !isIP(self.end) || ip(self.start).family() != 6"
            " || ip(self.end).family() != 6 || " + _not_after("self.start", "self.end"),
            "message": "start must not be after end",
        },
    ]
    subnets = spec["properties"]["subnets"]
    subnets["x-kubernetes-list-type"] = "map"
    subnets["x-kubernetes-list-map-keys"] = ["name"]
    return spec


def _printer_columns() -> list[dict[str, Any]]:
    """``kubectl get dp``: the prefix, and whether anything is wrong and why (RAListenerUnavailable, ...)."""

    def condition(type_: str, field: str) -> str:
        return f'.status.conditions[?(@.type=="{type_}")].{field}'

    return [
        {"name": "Prefix", "type": "string", "jsonPath": ".status.currentPrefix"},
        {"name": "Ready", "type": "string", "jsonPath": condition("Ready", "status"),
         "description": "Ready: a prefix is acquired, every pool, advertisement and Service is in step,"
                        " nothing is degraded."},
        {"name": "Source", "type": "string", "jsonPath": ".status.prefixSource"},
        {"name": "Pools", "type": "string", "jsonPath": condition("PoolsSynced", "status"),
         "description": "PoolsSynced: every pool and CIDR group that names this DynamicPrefix is in step."},
        {"name": "Degraded", "type": "string", "jsonPath": condition("Degraded", "status")},
        {"name": "Reason", "type": "string", "jsonPath": condition("Degraded", "reason"),
         "description": "Why it is degraded (AsExpected when it is not)."},
        {"name": "Message", "type": "string", "jsonPath": condition("Degraded", "message"), "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]  # fmt: skip


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition, ready to apply."""
    status_raw = DynamicPrefixStatus.model_json_schema(by_alias=True)
    status = _structural(status_raw, status_raw.get("$defs", {}))
    status.pop("description", None)
    conds = status["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "map"
    conds["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": "dynamicprefix",
                "shortNames": ["dp"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A dynamic IPv6 prefix and what the cluster derives from it.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(),
                                "status": status,
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    import yaml

    class Plain(yaml.SafeDumper):
        """Writes a schema shared by two fields (SourceStatus) twice, not as a YAML alias."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    header = "# Generated by `clusterd crd` from clusterd/crd.py; do not edit (a test fails on drift).\n"
    return header + yaml.dump(crd(), Dumper=Plain, sort_keys=False, width=120)
