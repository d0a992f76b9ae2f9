"""OpenWrt's UCI configuration (/etc/config/routerd) mapped onto routerd's configuration.

The keys are routerd.toml's keys; UCI section types name the TOML tables::

    config routerd 'main'            # top-level keys
        option router_id 'edge-1'
    config interface                 # [[interface]], repeatable
        option name 'br-lan'
        list allowed_routers 'fe80::1'
    config mqtt                      # [mqtt]; likewise tracker, publish, stdout
        option host 'broker.lan'
    config webhook                   # [[webhook]], repeatable
        option url 'https://...'
    config exec                      # [[exec]], repeatable
        list command '/usr/bin/hook'
    config nftables                  # [nftables]
        option mode 'fw4'
    config nftables_range            # [[nftables.range]], repeatable
        option set 'dp_lb'

Values are strings, as in UCI; pydantic turns '1'/'0', 'true'/'false' and
numbers into what each key wants. Errors name the section and option.
"""

from __future__ import annotations

import shlex
from typing import Any

from routerd.settings import ConfigError

TABLES = {"tracker", "publish", "stdout", "mqtt", "nftables"}
REPEATED = {"interface", "webhook", "exec"}
NESTED = {"nftables_range": ("nftables", "range")}
"""Repeated sections that are lists inside a table: ``config nftables_range`` is ``[[nftables.range]]``."""
ENABLED = "enabled"
"""``option enabled '0'`` turns a section off (the OpenWrt convention)."""


def parse_uci(text: str, origin: str = "/etc/config/routerd") -> dict[str, Any]:
    """UCI text -> the document routerd.toml would give."""
    doc: dict[str, Any] = {}
    section: dict[str, Any] | None = None
    sections: list[tuple[str, dict[str, Any], int]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as e:
            raise ConfigError(f"{origin}:{lineno}: {e} (check the quotes)") from None
        if not words:
            continue
        kind = words[0]
        if kind == "config":
            if len(words) not in (2, 3):
                raise ConfigError(f"{origin}:{lineno}: expected: config <type> ['<name>']")
            section = {}
            sections.append((words[1], section, lineno))
        elif kind in ("option", "list"):
            if section is None:
                raise ConfigError(f"{origin}:{lineno}: {kind} before any config section")
            if len(words) != 3:
                raise ConfigError(f"{origin}:{lineno}: expected: {kind} <name> '<value>'")
            if kind == "option":
                section[words[1]] = words[2]
            else:
                section.setdefault(words[1], []).append(words[2])
        else:
            raise ConfigError(f"{origin}:{lineno}: unknown keyword {kind!r} (config, option or list)")
    off: set[str] = set()
    for stype, values, lineno in sections:
        if values.pop(ENABLED, "1") in ("0", "false", "no", "off"):
            off.add(stype)
            continue
        if stype == "routerd":
            doc.update(values)
        elif stype in TABLES:
            doc.setdefault(stype, {}).update(values)
        elif stype in REPEATED:
            doc.setdefault(stype, []).append(values)
        elif stype in NESTED:
            table, key = NESTED[stype]
            doc.setdefault(table, {}).setdefault(key, []).append(values)
        else:
            raise ConfigError(
                f"{origin}:{lineno}: unknown section type {stype!r}; "
                f"use routerd, interface, webhook, exec, nftables_range, {', '.join(sorted(TABLES))}"
            )
    for table in off & TABLES:
        doc.pop(table, None)  # with the lists nested in it: a disabled [nftables] takes its ranges along
    return doc
