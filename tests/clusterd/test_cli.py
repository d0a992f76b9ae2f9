"""clusterd's command line: the same convention as routerd's (``-c/--config FILE``, help on every
option, usage errors exit 2), and one line instead of a traceback when the cluster's credentials are missing.

The missing-extra case (clusterd installed with routerd's extra only) runs in a real venv with only
``.[router]``: tests/packaging/test_quickstart_linux.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ground.ports import free_port


def clusterd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clusterd", *args], capture_output=True, text=True, check=False,
                          timeout=60, env=env if env is not None else dict(os.environ))  # fmt: skip


def test_every_option_and_argument_has_help_text() -> None:
    from clusterd.cli import build_parser

    parsers = [build_parser()]
    for action in parsers[0]._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += action.choices.values()
    missing = [f"{sp.prog}: {'/'.join(a.option_strings) or a.dest}" for sp in parsers for a in sp._actions
               if not a.help and not isinstance(a, argparse._SubParsersAction)]  # fmt: skip
    assert missing == []


def test_top_level_help_points_to_the_run_options() -> None:
    out = clusterd("--help")
    assert out.returncode == 0 and "clusterd run --help" in out.stdout


def test_check_config_takes_the_file_with_c_or_as_an_argument(tmp_path: Path) -> None:
    cfg = tmp_path / "clusterd.yaml"
    cfg.write_text("leaderElection: {enabled: true}\n")
    for argv in (["check-config", "-c", str(cfg)], ["check-config", "--config", str(cfg)],
                 ["check-config", str(cfg)]):  # fmt: skip
        out = clusterd(*argv)
        assert out.returncode == 0, out.stderr
        assert f"ok: read {cfg}" in out.stdout


@pytest.mark.parametrize(
    "argv",
    [["--no-such-option"], ["check-config"], ["check-config", "-c", "a.yaml", "b.yaml"], ["run", "extra"]],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    out = clusterd(*argv)
    assert out.returncode == 2 and "usage:" in out.stderr, out


def test_no_kubeconfig_is_one_line_naming_what_to_set(tmp_path: Path) -> None:
    cfg = tmp_path / "clusterd.yaml"
    cfg.write_text(f'healthListen: "127.0.0.1:{free_port()}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    out = clusterd("run", "-c", str(cfg), env={**env, "HOME": str(tmp_path)})
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "kubeconfig" in line and "KUBECONFIG" in line
