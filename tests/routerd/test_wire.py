"""The wire contract (routerd/core/wire.py): validation, clear errors, round trips, the published schema."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core import wire


def good(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": wire.SCHEMA_ID,
        "version": 1,
        "router": "edge-1",
        "interface": "eth0",
        "boot": "0123456789abcdef",
        "sequence": 1_764_000_000_000,
        "observedAt": "2026-11-26T13:00:00Z",
        "prefixes": [
            {
                "prefix": "2001:db8:b::/64",
                "state": "preferred",
                "validLifetime": 86400,
                "preferredLifetime": 14400,
                "sources": ["ra", "address"],
                "routers": ["fe80::1"],
            },
            {
                "prefix": "2001:db8:a::/64",
                "state": "withdrawn",
                "validLifetime": 7200,
                "preferredLifetime": 0,
                "sources": ["ra"],
                "routers": ["fe80::1"],
            },
        ],
    }
    doc.update(over)
    return doc


def test_a_good_message_round_trips() -> None:
    msg = wire.decode(json.dumps(good()))
    assert msg.prefixes[0].state is wire.PrefixStatus.PREFERRED
    assert json.loads(msg.to_json()) == good()
    assert wire.decode(msg.to_json()) == msg


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps(good(version=2)), "unsupported schema"),
        (json.dumps(good(schema="https://example.com/other")), "unsupported schema"),
        (json.dumps(good(sequence=-1)), "sequence"),
        (json.dumps(good(router="")), "router"),
        (json.dumps(good(boot="not-hex")), "boot"),
        (json.dumps(good(extra=1)), "extra"),
        (
            json.dumps(good(prefixes=[{**good()["prefixes"][0], "prefix": "::/0"}])),
            "prefix length must be 1..64",
        ),
        (json.dumps(good(prefixes=[{**good()["prefixes"][0], "prefix": "fe80::/64"}])), "link-local"),
        (json.dumps(good(prefixes=[{**good()["prefixes"][0], "prefix": "ff02::/64"}])), "multicast"),
        (json.dumps(good(prefixes=[{**good()["prefixes"][0], "prefix": "2001:db8::1/128"}])), "1..64"),
        (json.dumps(good(prefixes=[{**good()["prefixes"][0], "prefix": "2001:db8::1/64"}])), "host bits"),
        (
            json.dumps(good(prefixes=[{**good()["prefixes"][0], "preferredLifetime": 90000}])),
            "exceeds validLifetime",
        ),
        (json.dumps(good(prefixes=[{**good()["prefixes"][0], "preferredLifetime": 0}])), "preferred prefix"),
        (json.dumps(good(prefixes=[{**good()["prefixes"][1], "preferredLifetime": 5}])), "withdrawn prefix"),
        (json.dumps(good(prefixes=[good()["prefixes"][0]] * 2)), "listed twice"),
        (json.dumps(good(prefixes=[{**good()["prefixes"][0], "sources": []}])), "sources"),
    ],
)
def test_bad_messages_get_an_error_that_says_what_is_wrong(payload: bytes | str, fragment: str) -> None:
    with pytest.raises(wire.WireError, match=fragment):
        wire.decode(payload)


def test_the_published_schema_accepts_the_documented_example_and_rejects_a_bad_one() -> None:
    schema = wire.json_schema()
    jsonschema.validate(good(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(good(sequence="1"), schema)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=6),
                    max_leaves=30))  # fmt: skip
def test_any_json_validates_or_raises_the_model_error(doc: object) -> None:
    with contextlib.suppress(wire.WireError):
        wire.decode(json.dumps(doc))


@given(
    st.dictionaries(
        st.sampled_from(list(good())), st.integers() | st.text(max_size=8) | st.none(), max_size=4
    )
)
def test_near_miss_messages_validate_or_raise_the_model_error(over: dict[str, Any]) -> None:
    with contextlib.suppress(wire.WireError):
        wire.decode(json.dumps(good(**over)))


def test_observed_at_is_utc_to_the_second_with_z() -> None:
    from datetime import UTC, datetime

    from routerd.core.wire import timestamp

    assert timestamp(datetime(2026, 11, 26, 1, 2, 3, 987654, tzinfo=UTC)) == "2026-11-26T01:02:03Z"
