"""routerd's configuration: TOML validated by pydantic, errors that name the key and the fix.

With no file routerd uses its embedded default: watch the default-route
interface (RA listener and netlink) and print the state as JSON lines.
The reference (docs/configuration.md) is generated from these models.
"""

from __future__ import annotations

import socket
import tomllib
from ipaddress import IPv6Address
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from routerd.core.emitter import EmitPolicy
from routerd.core.tracker import TrackerConfig
from routerd.settings import ConfigError, one_source, read_secret, validated

__all__ = ["Config", "ConfigError", "load", "parse", "read_secret"]

DEFAULT_PATH = Path("/etc/routerd/routerd.toml")

IfName = Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[^/\s]+$")]
CredentialName = Annotated[
    str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$")
]
"""A file name in systemd's $CREDENTIALS_DIRECTORY (LoadCredential=<name>:<file>)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackerSection(_Section):
    """Which prefixes count, and how long withdrawn ones stay listed."""

    allow_ula: bool = Field(False, description="Track unique-local prefixes (fc00::/7) too.")
    max_prefix_length: int = Field(64, ge=1, le=64, description="Ignore longer prefixes.")
    max_prefixes: int = Field(16, ge=1, le=64, description="Per interface; more are ignored and counted.")
    withdrawn_retention: float = Field(
        600.0, ge=0, description="Seconds a prefix whose valid lifetime ran out stays listed as withdrawn."
    )
    include_static: bool = Field(False, description="Count manually configured addresses as prefixes.")

    def tracker_config(self) -> TrackerConfig:
        return TrackerConfig(**self.model_dump())


class PublishSection(_Section):
    """When messages go out."""

    hold_down: float = Field(
        2.0, ge=0, le=300, description="Seconds after a publish in which further changes are coalesced."
    )
    heartbeat: float = Field(
        300.0, ge=5, le=86400, description="Seconds between re-publishes of an unchanged state."
    )

    def policy(self) -> EmitPolicy:
        return EmitPolicy(hold_down=self.hold_down, heartbeat=self.heartbeat)


class InterfaceSection(_Section):
    """One interface to watch."""

    name: IfName = Field(description="Kernel interface name, e.g. eth0 or br-lan.")
    ra: bool = Field(
        True, description="Listen for Router Advertisements on a raw socket (needs CAP_NET_RAW)."
    )
    netlink: bool = Field(True, description="Follow the kernel's addresses and RA-learned prefixes.")
    allowed_routers: tuple[IPv6Address, ...] = Field(
        (), description="Accept RAs only from these link-local addresses (empty: any router)."
    )

    @field_validator("allowed_routers")
    @classmethod
    def _link_local(cls, v: tuple[IPv6Address, ...]) -> tuple[IPv6Address, ...]:
        for a in v:
            if not a.is_link_local:
                raise ValueError(f"{a} is not link-local; routers send RAs from fe80::/10 addresses")
        return v


class StdoutSection(_Section):
    """JSON lines on standard output."""

    enabled: bool | None = Field(None, description="Default: on when no MQTT or webhook sink is configured.")


class MQTTSection(_Section):
    """Publish to an MQTT broker (retained state, availability with a Last Will)."""

    host: str = Field(min_length=1, description="Broker host name or address.")
    port: int | None = Field(None, ge=1, le=65535, description="Default 8883 with TLS, 1883 without.")
    tls: bool = Field(True, description="Use TLS and verify the broker's certificate.")
    ca_file: Path | None = Field(
        None, description="CA bundle for the broker's certificate (default: system)."
    )
    username: str | None = Field(None, description="MQTT user name.")
    password_file: Path | None = Field(None, description="File holding the MQTT password.")
    password_env: str | None = Field(None, description="Environment variable holding the MQTT password.")
    password_credential: CredentialName | None = Field(
        None,
        description="systemd credential holding the MQTT password (the unit's LoadCredential=<name>:<file>).",
    )
    base_topic: str = Field(
        "dynamic-prefix",
        min_length=1,
        pattern=r"^[^#+]+$",
        description="Topics are <base>/<router>/<interface>/state and <base>/<router>/availability.",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto tries MQTT 5 (message expiry from lifetimes) and falls back to 3.1.1."
    )
    keepalive: int = Field(30, ge=5, le=3600, description="Seconds.")
    client_id: str | None = Field(None, description="Default: routerd-<router_id>.")
    homeassistant_discovery: bool | None = Field(
        None,
        description="true: announce each interface's current prefix to Home Assistant as a sensor (retained "
        "config on homeassistant/sensor/<id>/config); false: remove those announcements; unset: leave them alone.",
    )

    @model_validator(mode="after")
    def _one_password_source(self) -> MQTTSection:
        one_source({"password_file": self.password_file, "password_env": self.password_env,
                    "password_credential": self.password_credential}, "MQTT password", required=False)  # fmt: skip
        return self

    def password(self) -> str | None:
        """The password from its file, variable or credential; None when the broker takes none."""
        if self.password_file is None and self.password_env is None and self.password_credential is None:
            return None
        return read_secret(self.password_file, self.password_env, "MQTT password",
                           credential=self.password_credential)  # fmt: skip

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls else 1883)


class WebhookSection(_Section):
    """POST each state to a URL, HMAC-SHA256 signed."""

    url: str = Field(
        pattern=r"^https?://", description="Where to POST: https://, or http:// with allow_insecure."
    )
    allow_insecure: bool = Field(
        False,
        description="Accept a plain http:// url (only on a link you trust: the state travels unencrypted).",
    )
    secret_file: Path | None = Field(None, description="File holding the shared HMAC secret.")
    secret_env: str | None = Field(None, description="Environment variable holding the shared HMAC secret.")
    secret_credential: CredentialName | None = Field(
        None,
        description="systemd credential holding the HMAC secret (the unit's LoadCredential=<name>:<file>).",
    )
    ca_file: Path | None = Field(
        None, description="CA bundle for the server's certificate (default: system)."
    )
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds per attempt.")

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSection:
        one_source({"secret_file": self.secret_file, "secret_env": self.secret_env,
                    "secret_credential": self.secret_credential}, "HMAC key", required=True)  # fmt: skip
        if self.url.startswith("http://") and not self.allow_insecure:
            raise ValueError(
                "plain http:// sends the prefix state unencrypted (signed, but anyone on the path reads it): "
                "use https://, or set allow_insecure = true for a link you trust"
            )
        return self

    def secret(self) -> str:
        """The HMAC key from its file, variable or credential."""
        return read_secret(
            self.secret_file, self.secret_env, "webhook secret", credential=self.secret_credential
        )


class ExecSection(_Section):
    """Run a command when the state changes: the message on stdin, DYNAMIC_PREFIX_* in the environment."""

    command: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        min_length=1,
        description="Program and arguments, run without a shell (write sh -c '...' for one).",
    )
    timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds a run may take; then its process group is killed."
    )

    @field_validator("command", mode="before")
    @classmethod
    def _a_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError(
                'give the program and its arguments as a list, e.g. ["/usr/local/bin/hook", "--flag"] '
                "(UCI: one `list command` line each); it runs without a shell: "
                'for one write ["sh", "-c", "..."]'
            )
        return v


NftName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")]
HOST_PART = 1 << 64
"""Range suffixes fill at most the last 64 bits: routerd's prefixes are /64 or shorter."""


class NftRangeSection(_Section):
    """A range set: in every valid prefix, the addresses between two host suffixes (clusterd's ranges)."""

    set: NftName = Field(description="The set's name; ranges naming the same set go into it together.")
    start: IPv6Address = Field(description="First host suffix, e.g. ::f000:0:0:0.")
    end: IPv6Address = Field(description="Last host suffix, e.g. ::ffff:ffff:ffff:ffff.")

    @model_validator(mode="after")
    def _suffixes(self) -> NftRangeSection:
        for key in ("start", "end"):
            if int(getattr(self, key)) >= HOST_PART:
                raise ValueError(
                    f"{key} {getattr(self, key)} sets bits above the last 64: a suffix fills only "
                    "the host part, like ::f000:0:0:0"
                )
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class NftablesSection(_Section):
    """Keep nftables sets in step with the prefixes (docs/nftables.md)."""

    mode: Literal["table", "fw4"] = Field(
        "table",
        description="table: routerd's own `table inet <table>`, one `nft -f` transaction per change; "
        "fw4: OpenWrt's firewall4 sets, through loadfiles and `fw4 reload-sets`.",
    )
    table: NftName = Field(
        "dynamic_prefix",
        description="mode table: the inet table holding the sets (created if missing; routerd declares "
        "and fills its sets and touches nothing else in it).",
    )
    prefix_set: NftName = Field("prefixes", description="The set of the current and still-valid prefixes.")
    interfaces: tuple[IfName, ...] = Field(
        (), description="Whose prefixes go into the sets (default: every watched interface)."
    )
    ranges: tuple[NftRangeSection, ...] = Field(
        (), alias="range", description="Range sets ([[nftables.range]] tables)."
    )
    loadfile_dir: Path = Field(
        Path("/var/run/routerd"),
        description="mode fw4: routerd writes `<loadfile_dir>/<set>.txt`; name it in the set's `config ipset` "
        "loadfile.",
    )

    @model_validator(mode="after")
    def _distinct_sets(self) -> NftablesSection:
        if any(r.set == self.prefix_set for r in self.ranges):
            raise ValueError(
                f"a range set is named {self.prefix_set!r} like prefix_set: give it its own name"
            )
        return self


class Config(_Section):
    """The whole file; every section is optional."""

    router_id: str = Field(
        default_factory=lambda: socket.gethostname().split(".")[0] or "router",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$",
        description="This router's id in topics and messages (default: the host name).",
    )
    state_dir: Path | None = Field(
        None,
        description="Where the sequence reservation lives (/var/lib/routerd, else ~/.local/state/routerd).",
    )
    control_socket: Path | None = Field(
        None,
        description="Unix socket for `routerd status` and DHCPv6 hooks (default /run/routerd/control.sock).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="json for structured log lines.")
    tracker: TrackerSection = Field(default_factory=TrackerSection)
    publish: PublishSection = Field(default_factory=PublishSection)
    interface: tuple[InterfaceSection, ...] = Field(
        (), description="Interfaces to watch ([[interface]] tables; default: the default-route interface)."
    )
    stdout: StdoutSection = Field(default_factory=StdoutSection)
    mqtt: MQTTSection | None = Field(None, description="MQTT sink.")
    webhook: tuple[WebhookSection, ...] = Field((), description="Webhook sinks ([[webhook]] tables).")
    exec: tuple[ExecSection, ...] = Field((), description="Command hooks ([[exec]] tables).")
    nftables: NftablesSection | None = Field(None, description="nftables sets that follow the prefixes.")

    @field_validator("interface")
    @classmethod
    def _unique_names(cls, v: tuple[InterfaceSection, ...]) -> tuple[InterfaceSection, ...]:
        names = [i.name for i in v]
        if len(set(names)) != len(names):
            raise ValueError("an interface is listed twice")
        return v

    @model_validator(mode="after")
    def _nft_interfaces_watched(self) -> Config:
        watched = {i.name for i in self.interface}
        unwatched = [
            n for n in (self.nftables.interfaces if self.nftables else ()) if watched and n not in watched
        ]
        if unwatched:
            raise ValueError(
                f"nftables.interfaces names {', '.join(unwatched)}, which no [[interface]] watches: "
                "its sets would stay empty; add the interface or remove the name"
            )
        return self

    @property
    def stdout_enabled(self) -> bool:
        if self.stdout.enabled is not None:
            return self.stdout.enabled
        return self.mqtt is None and not self.webhook


def parse(doc: dict[str, Any], origin: str = "configuration") -> Config:
    """Validate a parsed TOML document."""
    return validated(Config, doc, origin)


def default_path(path: Path | None) -> Path | None:
    """The file routerd reads: ``path``, else /etc/routerd/routerd.toml if it exists, else none."""
    if path is None and DEFAULT_PATH.exists():
        return DEFAULT_PATH
    return path


def load(path: Path | None) -> Config:
    """Load ``path`` (TOML, or OpenWrt's UCI format); with None, the embedded default
    (or /etc/routerd/routerd.toml if present)."""
    path = default_path(path)
    if path is None:
        return Config()
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}; pass --config with a readable file") from None
    if path.suffix != ".toml" and _looks_like_uci(text):
        from routerd.uci import parse_uci

        return parse(parse_uci(text, str(path)), str(path))
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse(doc, str(path))


def _looks_like_uci(text: str) -> bool:
    """OpenWrt's /etc/config/routerd: its first statement is ``config <type>``."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            return words[0] in ("config", "option", "list")
    return False
