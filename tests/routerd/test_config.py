"""routerd's configuration (routerd/config.py): defaults, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from routerd import config as cfgmod


def test_the_embedded_default_watches_the_default_route_and_prints() -> None:
    cfg = cfgmod.parse({})
    assert cfg.interface == () and cfg.stdout_enabled and cfg.mqtt is None
    assert cfg.tracker.tracker_config().max_prefix_length == 64


def test_a_sink_turns_stdout_off_unless_asked() -> None:
    cfg = cfgmod.parse({"mqtt": {"host": "broker"}})
    assert not cfg.stdout_enabled and cfg.mqtt is not None and cfg.mqtt.effective_port == 8883
    assert cfgmod.parse({"mqtt": {"host": "b", "tls": False}, "stdout": {"enabled": True}}).stdout_enabled


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"interfac": []}, "interfac: unknown key"),
        (
            {"interface": [{"name": "eth0", "ra": "sometimes"}]},
            "interface.0.ra: Input should be a valid boolean",
        ),
        ({"interface": [{"nam": "eth0"}]}, "interface.0.name: required key is missing"),
        ({"interface": [{"name": "eth0"}, {"name": "eth0"}]}, "listed twice"),
        ({"interface": [{"name": "eth0", "allowed_routers": ["2001:db8::1"]}]}, "is not link-local"),
        ({"mqtt": {"host": "b", "password_file": "/a", "password_env": "B"}}, "at most one of"),
        ({"mqtt": {"host": "b", "base_topic": "a/#"}}, "mqtt.base_topic"),
        ({"webhook": [{"url": "https://x"}]}, "exactly one of secret_file, secret_env or secret_credential"),
        ({"webhook": [{"url": "ftp://x", "secret_env": "S"}]}, "webhook.0.url"),
        ({"webhook": [{"url": "http://hook.lan/", "secret_env": "S"}]}, "set allow_insecure = true"),
        ({"webhook": [{"url": "https://x", "secret_env": "S", "secret_credential": "k"}]}, "exactly one of"),
        ({"webhook": [{"url": "https://x", "secret_credential": "../k"}]}, "webhook.0.secret_credential"),
        ({"mqtt": {"host": "b", "password_env": "P", "password_credential": "p"}}, "at most one of"),
        ({"tracker": {"max_prefix_length": 80}}, "tracker.max_prefix_length"),
        ({"publish": {"heartbeat": 1}}, "publish.heartbeat"),
        ({"exec": [{"command": []}]}, "exec.0.command: Tuple should have at least 1 item"),
        (
            {"exec": [{"command": "/usr/bin/hook -v"}]},
            "exec.0.command: Value error, give the program and its "
            'arguments as a list, e.g. ["/usr/local/bin/hook", "--flag"]',
        ),
        ({"exec": [{"command": ["/usr/bin/hook"], "timeout": 0}]}, "exec.0.timeout"),
    ],
)
def test_errors_name_the_key(doc: dict[str, object], fragment: str) -> None:
    with pytest.raises(cfgmod.ConfigError, match="invalid") as err:
        cfgmod.parse(doc, "routerd.toml")
    assert fragment in str(err.value)


def test_a_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "routerd.toml"
    p.write_text("router_id = \n")
    with pytest.raises(cfgmod.ConfigError, match=r"routerd\.toml is not valid TOML"):
        cfgmod.load(p)


def test_an_unreadable_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(cfgmod.ConfigError, match="pass --config"):
        cfgmod.load(tmp_path / "missing.toml")


def test_secrets_come_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "key"
    f.write_text("abc\n")
    assert cfgmod.read_secret(f, None, "x") == "abc"
    monkeypatch.setenv("KEY", "def")
    assert cfgmod.read_secret(None, "KEY", "x") == "def"
    monkeypatch.delenv("KEY")
    with pytest.raises(cfgmod.ConfigError, match="KEY is not set"):
        cfgmod.read_secret(None, "KEY", "webhook secret")
    f.write_text("")
    with pytest.raises(cfgmod.ConfigError, match="is empty"):
        cfgmod.read_secret(f, None, "webhook secret")


def test_plain_http_needs_allow_insecure() -> None:
    cfg = cfgmod.parse({"webhook": [{"url": "http://hook.lan/", "secret_env": "S", "allow_insecure": True}]})
    assert cfg.webhook[0].allow_insecure


def test_a_secret_from_systemds_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "webhook.key").write_text("ghi\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(
        cfgmod.ConfigError, match=r"\$CREDENTIALS_DIRECTORY is not set.*LoadCredential=webhook.key:"
    ):
        cfgmod.read_secret(None, None, "webhook secret", credential="webhook.key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert cfgmod.read_secret(None, None, "webhook secret", credential="webhook.key") == "ghi"
    with pytest.raises(cfgmod.ConfigError, match=r"credential mqtt\.pass is not in"):
        cfgmod.read_secret(None, None, "MQTT password", credential="mqtt.pass")
