"""The wire contract: one JSON message = the full state of one (router, interface).

This is a public contract (docs/wire-protocol.md, docs/wire-schema.json):
other tools subscribe to it. Rules that make it safe to consume:

- **Full state, not a delta.** A consumer that missed messages converges on
  the next one; a retained MQTT message gives a newcomer the state at once.
- **Ordered by ``sequence``**, which never goes backwards for a router, across
  restarts too. Wall time (``observedAt``) is for humans only: routers boot
  with a wrong clock until NTP syncs.
- **Lifetimes are remaining seconds** at publication (``null`` = infinite).
- **Prefixes are sorted best first**: the first ``preferred`` entry is the one
  to hand out; ``deprecated`` ones drain; ``withdrawn`` ones are gone or going.

Works with pydantic 2.8 (OpenWrt's feed) and newer.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from datetime import datetime
from ipaddress import IPv6Address, IPv6Network
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_ID: Final = "https://dynamic-prefix.io/schemas/prefix-state/v1"
SCHEMA_VERSION: Final = 1
MAX_PREFIXES = 64
"""No real link carries more; a bigger message is refused as malformed."""

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]
Lifetime = Annotated[int, Field(ge=0, le=0xFFFFFFFE)] | None


class WireError(ValueError):
    """A message that is not a valid prefix-state message; the text says what and why."""


class PrefixStatus(enum.StrEnum):
    """Where a prefix is in its life (RFC 4862 §5.5.4, RFC 9096)."""

    PREFERRED = "preferred"
    """Valid and preferred: use it for new addresses."""
    DEPRECATED = "deprecated"
    """Valid, not preferred (preferred lifetime 0 or run out): keep what uses it, start nothing new."""
    WITHDRAWN = "withdrawn"
    """The router advertised valid lifetime 0, or the valid lifetime ran out."""


class SourceKind(enum.StrEnum):
    """Where routerd learned a prefix."""

    RA = "ra"
    """A Router Advertisement heard on routerd's raw socket."""
    KERNEL_RA = "kernel-ra"
    """RTM_NEWPREFIX: the kernel processed an RA (netlink)."""
    ADDRESS = "address"
    """A global address on the interface (RTM_NEWADDR, netlink)."""
    DHCPV6_PD = "dhcpv6-pd"
    """A prefix delegated to this router (DHCPv6 client hook)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Prefix(_Model):
    """One prefix on the interface."""

    prefix: IPv6Network = Field(description="The prefix, host bits zero, length 1..64.")
    state: PrefixStatus
    valid_lifetime: Lifetime = Field(
        alias="validLifetime", description="Remaining valid lifetime in seconds; null = infinite."
    )
    preferred_lifetime: Lifetime = Field(
        alias="preferredLifetime",
        description="Remaining preferred lifetime in seconds; null = infinite; 0 unless preferred.",
    )
    sources: tuple[SourceKind, ...] = Field(min_length=1, description="Who reported it.")
    routers: tuple[IPv6Address, ...] = Field(
        default=(),
        description="Link-local addresses of the routers that advertised it (RA sources).",
    )

    @field_validator("prefix", mode="before")
    @classmethod
    def _strict_prefix(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return IPv6Network(v, strict=True)
            except ValueError as e:
                raise ValueError(f"{v!r} is not an IPv6 prefix with its host bits zero ({e})") from None
        return v

    @field_validator("prefix")
    @classmethod
    def _usable(cls, v: IPv6Network) -> IPv6Network:
        if not 1 <= v.prefixlen <= 64:
            raise ValueError(f"{v}: prefix length must be 1..64 (a /{v.prefixlen} cannot be renumbered into)")
        for bad, what in (
            (v.is_link_local, "link-local"),
            (v.is_multicast, "multicast"),
            (v.is_loopback, "loopback"),
            (v.is_unspecified, "unspecified"),
        ):
            if bad:
                raise ValueError(f"{v} is {what}, not a routable prefix")
        return v

    @model_validator(mode="after")
    def _lifetimes(self) -> Prefix:
        v, p = self.valid_lifetime, self.preferred_lifetime
        if p is None and v is not None:
            raise ValueError("preferredLifetime is infinite but validLifetime is not")
        if p is not None and v is not None and p > v:
            raise ValueError(f"preferredLifetime {p} exceeds validLifetime {v} (RFC 4862 §5.5.3 c)")
        if self.state is PrefixStatus.PREFERRED and (p == 0 or v == 0):
            raise ValueError("a preferred prefix has lifetimes > 0")
        if self.state is not PrefixStatus.PREFERRED and p != 0:
            raise ValueError(f"a {self.state.value} prefix has preferredLifetime 0")
        if self.state is PrefixStatus.DEPRECATED and v == 0:
            raise ValueError("a deprecated prefix has validLifetime > 0 (with 0 it is withdrawn)")
        return self


class PrefixState(_Model):
    """The full current IPv6 prefix state of one (router, interface)."""

    schema_: Literal["https://dynamic-prefix.io/schemas/prefix-state/v1"] = Field(
        default=SCHEMA_ID,
        alias="schema",
        description="Schema id; a new major version gets a new id.",
    )
    version: Literal[1] = Field(default=SCHEMA_VERSION, description="Schema version.")
    router: Name = Field(description="The router's id (configured; default: its hostname).")
    interface: Name = Field(description="The interface this state is for.")
    boot: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")] = Field(
        description="Random id of this routerd run; changes when routerd (or the router) restarts."
    )
    sequence: Annotated[int, Field(ge=0, le=2**53 - 1)] = Field(
        description="Orders messages from this router; never goes backwards, across restarts too."
    )
    observed_at: str = Field(
        alias="observedAt",
        max_length=40,
        description="Router wall time, ISO 8601, for humans only.",
    )
    prefixes: tuple[Prefix, ...] = Field(max_length=MAX_PREFIXES, description="Best first.")

    @model_validator(mode="after")
    def _unique(self) -> PrefixState:
        seen = [p.prefix for p in self.prefixes]
        if len(set(seen)) != len(seen):
            raise ValueError("a prefix is listed twice")
        return self

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


TIMESTAMP_HEADER = "X-Dynamic-Prefix-Timestamp"
"""The webhook header carrying the Unix seconds the request was signed at."""
SIGNATURE_HEADER = "X-Dynamic-Prefix-Signature"
"""The webhook header carrying :func:`sign`'s value."""


def sign(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """The webhook signature header value: HMAC-SHA256 over ``"<timestamp>." + body`` (docs/wire-protocol.md)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def timestamp(at: datetime) -> str:
    """``observedAt`` for a UTC time: ISO 8601 to the second, with Z."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def decode(payload: bytes | str) -> PrefixState:
    """Parse and validate a message, or raise :class:`WireError` saying what is wrong."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise WireError("not a JSON object")
    if doc.get("schema") != SCHEMA_ID or doc.get("version") != SCHEMA_VERSION:
        raise WireError(
            f"unsupported schema {doc.get('schema')!r} version {doc.get('version')!r}; "
            f"this consumer reads {SCHEMA_ID} version {SCHEMA_VERSION} (upgrade it)"
        )
    try:
        return PrefixState.model_validate(doc)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in e.errors()
        )
        raise WireError(f"invalid prefix-state message: {problems}") from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the message, as published in docs/wire-schema.json."""
    schema = PrefixState.model_json_schema(by_alias=True)
    schema["$id"] = SCHEMA_ID
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
