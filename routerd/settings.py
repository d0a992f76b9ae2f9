"""Configuration helpers routerd and clusterd share: one error type, one way to name bad keys,
one secret reader, one rule for secret sources, one TLS client context.

clusterd imports this module (not routerd.config, which is routerd's own file format).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names each bad key and what to do."""


def validated(model: type[ModelT], doc: dict[str, Any], origin: str) -> ModelT:
    """``model`` from ``doc``, or a :class:`ConfigError` listing every problem."""
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(f"{origin} is invalid:\n{describe(e)}") from None


def describe(e: ValidationError) -> str:
    """One line per problem: the dotted key, then what is wrong."""
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo? see docs/configuration.md for the keys)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def one_source(sources: Mapping[str, object], what: str, *, required: bool) -> None:
    """Refuse a secret configured in more than one place (which would win is a guess), or in
    none when ``required``. ``sources`` maps each key, as the file spells it, to its value."""
    given = [key for key, value in sources.items() if value is not None]
    if len(given) > 1 or (required and not given):
        *first, last = sources
        keys = f"{', '.join(first)} or {last}"
        also = f": {' and '.join(given)} are both set" if len(given) == 2 else (
            f": {', '.join(given)} are all set" if given else "")  # fmt: skip
        raise ValueError(f"set {'exactly' if required else 'at most'} one of {keys} (the {what}){also}")


def read_secret(file: Path | None, env: str | None, what: str, *, credential: str | None = None) -> str:
    """A secret from a file, an environment variable or a systemd credential; never logged."""
    if credential is not None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise ConfigError(
                f"the {what} is the systemd credential {credential}, but $CREDENTIALS_DIRECTORY is not set: "
                f"systemd sets it for a unit with LoadCredential={credential}:<file>; outside systemd "
                f"point CREDENTIALS_DIRECTORY at the directory holding {credential}"
            )
        file = Path(creds) / credential
        if not file.exists():
            raise ConfigError(
                f"the {what}: credential {credential} is not in {creds}; "
                f"add LoadCredential={credential}:<file> to the unit"
            )
    if file is not None:
        try:
            value = file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the {what} from {file}: {e.strerror}") from None
        if not value:
            raise ConfigError(f"{file} is empty; put the {what} in it")
        return value
    if env is not None:
        value = os.environ.get(env, "")
        if not value:
            raise ConfigError(f"environment variable {env} is not set; export the {what} in it")
        return value
    raise ConfigError(f"no {what} configured")


def tls_context(ca_file: Path | None, key: str) -> ssl.SSLContext:
    """A verifying client context with ``ca_file`` (or the system CAs); ``key`` names the setting."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as e:  # before OSError, its base class
        raise ConfigError(f"{key}: {ca_file} is not a PEM CA bundle ({e.reason})") from None
    except FileNotFoundError:
        raise ConfigError(
            f"{key}: {ca_file} does not exist; name the CA that signed the server's certificate"
        ) from None
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {ca_file}: {e.strerror}") from None
