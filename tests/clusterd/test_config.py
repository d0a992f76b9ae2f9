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
        (
            {"leaderElection": {"leaseDuration": 4.5}},
            "leaderElection.leaseDuration",
        ),  # the Lease holds whole seconds
        (
            {"leaderElection": {"leaseDuration": 15, "renewDeadline": 15}},
            "must be shorter than leaseDuration",
        ),
        ({"leaderElection": {"renewDeadline": 3, "retryPeriod": 3}}, "must be shorter than renewDeadline"),
        ({"webhook": {"secretEnv": "S", "maxBodyBytes": 10}}, "webhook.maxBodyBytes"),
    ],
)
def test_errors_name_the_key(doc: dict[str, object], fragment: str) -> None:
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.parse(doc, "clusterd.yaml")
    assert fragment in str(err.value)


def test_leader_election_timing_defaults_to_client_gos() -> None:
    le = cfgmod.parse({"leaderElection": {"enabled": True}}).leader_election
    assert (le.lease_duration, le.deadline, le.retry_period) == (15, 10, 2)
    short = cfgmod.parse({"leaderElection": {"leaseDuration": 4, "retryPeriod": 0.5}}).leader_election
    assert short.deadline == 4 * 2 / 3  # two thirds of whatever leaseDuration is


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


def test_mqtt_password_from_one_source_only() -> None:
    """Both passwordFile and passwordEnv set is refused, as routerd refuses it (the file used to
    win silently); one of them, or neither, is fine."""
    both = {"mqtt": {"host": "b", "passwordFile": "/run/secrets/mqtt", "passwordEnv": "MQTT_PASSWORD"}}
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.parse(both, "clusterd.yaml")
    assert "mqtt: " in str(err.value)
    assert "at most one of passwordFile or passwordEnv" in str(err.value)
    assert cfgmod.parse({"mqtt": {"host": "b", "passwordEnv": "P"}}).mqtt is not None
    assert cfgmod.parse({"mqtt": {"host": "b"}}).mqtt is not None
