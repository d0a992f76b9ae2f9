"""routerd's command line as a user meets it: one convention, help on every option, usage errors exit 2,
and ``check-config`` checks what ``run`` would refuse (secrets, CA files, interfaces) and names the file."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from routerd.cli import build_parser


def routerd(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "routerd", *args], capture_output=True, text=True, check=False,
                          timeout=60, env={**os.environ, **(env or {})}, cwd=cwd)  # fmt: skip


def _parsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [p]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_option_and_argument_has_help_text() -> None:
    missing = [
        f"{sp.prog}: {'/'.join(a.option_strings) or a.dest}"
        for sp in _parsers(build_parser())
        for a in sp._actions
        if not a.help and not isinstance(a, argparse._SubParsersAction)
    ]
    assert missing == []


def test_top_level_help_points_to_the_run_options() -> None:
    out = routerd("--help")
    assert out.returncode == 0
    assert "routerd run --help" in out.stdout and "--interface" in out.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-such-option"],
        ["once", "--wait", "soon"],
        ["hook", "odhcp6c", "wan"],  # needs <interface> <state>
        ["hook", "ubus"],
        ["check-config", "-c", "a.toml", "b.toml"],
    ],
)
def test_usage_errors_exit_2_with_a_usage_line(argv: list[str]) -> None:
    out = routerd(*argv)
    assert out.returncode == 2, out
    assert "usage:" in out.stderr


def test_check_config_takes_the_file_with_c_or_as_an_argument(tmp_path: Path) -> None:
    cfg = tmp_path / "routerd.toml"
    cfg.write_text('router_id = "gw-1"\n[[interface]]\nname = "lo"\n')
    for argv in (["check-config", "-c", str(cfg)], ["check-config", "--config", str(cfg)],
                 ["check-config", str(cfg)]):  # fmt: skip
        out = routerd(*argv)
        assert out.returncode == 0, out.stderr
        assert f"read {cfg}" in out.stdout and "router_id gw-1" in out.stdout


def test_check_config_without_a_file_says_which_it_read_or_that_there_is_none() -> None:
    out = routerd("check-config")
    if Path("/etc/routerd/routerd.toml").exists():  # this host has one: routerd reads it by default
        assert "read /etc/routerd/routerd.toml" in out.stdout + out.stderr
    else:
        assert out.returncode == 2 and out.stdout == ""
        assert "no configuration file to check" in out.stderr and "/etc/routerd/routerd.toml" in out.stderr


def _webhook(tmp_path: Path, extra: str) -> Path:
    cfg = tmp_path / "routerd.toml"
    cfg.write_text(f'[[interface]]\nname = "lo"\n[[webhook]]\nurl = "https://hook.example/"\n{extra}\n')
    return cfg


@pytest.mark.parametrize(
    ("extra", "files", "env", "fragment"),
    [
        ('secret_file = "{d}/missing.key"', {}, {}, "cannot read the webhook secret from {d}/missing.key"),
        ('secret_file = "{d}/empty.key"', {"empty.key": ""}, {}, "{d}/empty.key is empty"),
        ('secret_env = "ROUTERD_TEST_UNSET"', {}, {}, "ROUTERD_TEST_UNSET is not set"),
        ('secret_credential = "webhook.key"', {}, {}, "$CREDENTIALS_DIRECTORY is not set"),
        ('secret_credential = "webhook.key"', {}, {"CREDENTIALS_DIRECTORY": "{d}"},
         "credential webhook.key is not in {d}"),
        ('secret_env = "K"\nca_file = "{d}/nosuch-ca.pem"', {}, {"K": "k"}, "webhook.0.ca_file"),
        ('secret_env = "K"\nca_file = "{d}/not-a-ca.pem"', {"not-a-ca.pem": "hello\n"}, {"K": "k"},
         "not a PEM CA bundle"),
    ],
)  # fmt: skip
def test_check_config_refuses_what_run_refuses(
    tmp_path: Path, extra: str, files: dict[str, str], env: dict[str, str], fragment: str
) -> None:
    d = str(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cfg = _webhook(tmp_path, extra.format(d=d))
    env = {k: v.format(d=d) for k, v in env.items()}
    check = routerd("check-config", "-c", str(cfg), env=env)
    assert check.returncode == 2 and fragment.format(d=d) in check.stderr, check
    run = routerd("run", "-c", str(cfg), env={**env, "XDG_STATE_HOME": str(tmp_path / "state")})
    assert run.returncode == 2 and fragment.format(d=d) in run.stderr, run
    assert "Traceback" not in run.stderr


def test_check_config_reads_a_secret_from_the_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "webhook.key").write_text("s3cret\n")
    cfg = _webhook(tmp_path, 'secret_credential = "webhook.key"')
    out = routerd("check-config", "-c", str(cfg), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert out.returncode == 0, out.stderr
    assert "webhook https://hook.example/" in out.stdout and "s3cret" not in out.stdout + out.stderr


def test_check_config_names_an_interface_that_does_not_exist(tmp_path: Path) -> None:
    cfg = tmp_path / "routerd.toml"
    cfg.write_text('[[interface]]\nname = "nosuch0"\n')
    out = routerd("check-config", "-c", str(cfg))
    assert out.returncode == 0, out.stderr  # `run` waits for it to appear
    assert "nosuch0 does not exist" in out.stdout
    assert all(name in out.stdout for _, name in socket.if_nameindex())


def test_once_with_a_missing_interface_names_it_and_fails(tmp_path: Path) -> None:
    out = routerd("once", "-i", "typo0", "--wait", "0.5", env={"XDG_STATE_HOME": str(tmp_path)})
    assert out.returncode == 2, out
    assert "interface typo0 does not exist" in out.stderr
    assert all(name in out.stderr for _, name in socket.if_nameindex())
    assert out.stdout == ""
