"""clusterd's configuration (clusterd/config.py): errors name the key and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterd import config as cfgmod


def test_defaults() -> None:
    cfg = cfgmod.parse({})
    assert cfg.mqtt is None and cfg.webhook is None and not cfg.leader_election.enabled
    assert cfg.health_listen == "0.0.0.0:8080"


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"mqt": {}}, "mqt: unknown key"),
        ({"mqtt": {"hots": "b"}}, "mqtt.host: required key is missing"),
        ({"webhook": {}}, "secretFiles or secretEnv"),
        ({"webhook": {"secretEnv": "S", "certFile": "/c"}}, "both certFile and keyFile"),
        ({"leaderElection": {"leaseDuration": 0}}, "leaderElection.leaseDuration"),
        ({"webhook": {"secretEnv": "S", "maxBodyBytes": 10}}, "webhook.maxBodyBytes"),
    ],
)
def test_errors_name_the_key(doc: dict[str, object], fragment: str) -> None:
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.parse(doc, "clusterd.yaml")
    assert fragment in str(err.value)


def test_files(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("mqtt: [1, 2\n")
    with pytest.raises(cfgmod.ConfigError, match="not valid YAML"):
        cfgmod.load(p)
    p.write_text("- a\n")
    with pytest.raises(cfgmod.ConfigError, match="expected a mapping"):
        cfgmod.load(p)
    p.write_text("leaderElection: {enabled: true}\n")
    assert cfgmod.load(p).leader_election.enabled
