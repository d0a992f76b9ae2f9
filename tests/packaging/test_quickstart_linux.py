"""docs/quickstart-linux-webhook.md, executed: its shell commands run as written (with /opt, /etc,
/usr/local/bin and /run moved under a temporary root), on Debian's own python3, and routerd then starts
the way the shipped unit starts it.

systemd is not PID 1 here (the tests run in a container), so ``systemctl`` cannot start the unit. What
the unit would do is done by hand, the way systemd.exec(5) documents it: routerd runs as an unprivileged
uid from the dynamic range with ``UMask=0077``, its state and runtime directories owned by that uid, and
each ``LoadCredential=`` file copied into ``$CREDENTIALS_DIRECTORY`` (read-only, that uid's alone).
``systemd-analyze verify`` checks the unit itself. The same venv (routerd's extra only) shows what
clusterd says when its extra is missing.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ground.require import require_program, require_root
from tests.ground.waiting import wait_until
from tests.packaging.conftest import ROOT, clone

pytestmark = pytest.mark.packaging

DOC = ROOT / "docs" / "quickstart-linux-webhook.md"
DYNAMIC_UID = 61234
"""In systemd's DynamicUser= range (61184-65519) and in no passwd file."""
NEEDS_SYSTEMD = ("systemctl", "journalctl")
"""Commands that need systemd as PID 1; the test does what they would do."""
NEEDS_THE_SERVICE = ("routerd status",)
"""Commands that talk to the running service: run once the unit's process is up."""


def doc_commands() -> list[str]:
    """The shell commands of section 2, in order (a heredoc stays one command)."""
    section = DOC.read_text().split("## 2.", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        lines = block.splitlines()
        while lines:
            line = lines.pop(0)
            if m := re.search(r"<<'?(\w+)'?", line):
                body = [line]
                while (body_line := lines.pop(0)) != m.group(1):
                    body.append(body_line)
                line = "\n".join([*body, m.group(1)])
            commands.append(line)
    return commands


class Root:
    """A temporary / for the doc's absolute paths."""

    MOVED = ("/opt/", "/etc/", "/usr/local/bin/", "/run/", "/var/lib/")

    def __init__(self, path: Path) -> None:
        self.path = path
        for d in (*self.MOVED, "/etc/systemd/system/"):  # the last exists on every systemd host
            (path / d.strip("/")).mkdir(parents=True, exist_ok=True)

    def moved(self, text: str) -> str:
        for d in self.MOVED:
            text = re.sub(rf"(?<![\w/.]){re.escape(d)}", f"{self.path}{d}", text)
        return text

    def env(self) -> dict[str, str]:
        """A root shell's environment, with Debian's python3 (not a virtualenv's) first on PATH."""
        return {**os.environ, "PATH": f"{self.path}/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[Root, Path, list[str]]]:
    """The doc's commands up to starting the service, run in a clone: (root, clone, the rest)."""
    require_root()
    require_program("systemd-analyze", "systemd")
    with tempfile.TemporaryDirectory(prefix="dp-quickstart-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # the unit's user must reach the venv under it
        root = Root(base / "root")
        src = clone(base / "clone")
        commands = doc_commands()
        first_service_step = next(i for i, c in enumerate(commands) if c.startswith(NEEDS_SYSTEMD))
        env = {**root.env(), "key": "0123456789abcdef0123456789abcdef"}
        for command in commands[:first_service_step]:
            if command.startswith("apt-get install"):
                packages = [w for w in shlex.split(command)[2:] if not w.startswith("-")]
                for package in packages:  # installed by scripts/test; the test does not run apt
                    require_program("dpkg-query", "dpkg")
                    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                                         text=True, check=False)  # fmt: skip
                    assert "install ok installed" in out.stdout, f"{package} (from the doc) is not installed"
                continue
            out = subprocess.run(["bash", "-ec", root.moved(command)], cwd=src, env=env, capture_output=True,
                                 text=True, check=False, timeout=600)  # fmt: skip
            assert out.returncode == 0, (
                f"the documented command failed:\n{command}\n{out.stdout}\n{out.stderr}"
            )
        yield root, src, commands[first_service_step:]


def test_the_installed_unit_passes_systemd_analyze_verify(installed: tuple[Root, Path, list[str]]) -> None:
    root, _, _ = installed
    unit = root.path / "etc/systemd/system/routerd.service"
    text = unit.read_text()
    assert "ExecStart=/opt/routerd/bin/routerd run --config /etc/routerd/routerd.toml" in text
    verify = root.path / "verify" / "routerd.service"  # systemd-analyze checks the binary the unit names
    verify.parent.mkdir(exist_ok=True)
    verify.write_text(root.moved(text))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(verify)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "routerd.service" not in out.stderr, out.stderr


def _unit(root: Root) -> configparser.SectionProxy:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(root.path / "etc/systemd/system/routerd.service")
    return unit["Service"]


def _as_the_unit(root: Root) -> dict[str, str]:
    """Set up what systemd sets up for the unit; return its environment."""
    service = _unit(root)
    creds = root.path / "run/credentials/routerd.service"
    creds.mkdir(parents=True)
    for line in service["LoadCredential"].splitlines():
        name, source = line.split(":", 1)
        (creds / name).write_bytes(Path(root.moved(source)).read_bytes())
        (creds / name).chmod(0o400)
        os.chown(creds / name, DYNAMIC_UID, DYNAMIC_UID)
    creds.chmod(0o500)
    os.chown(creds, DYNAMIC_UID, DYNAMIC_UID)
    state = root.path / "var/lib" / service["StateDirectory"]
    runtime = root.path / "run" / service["RuntimeDirectory"]
    for d, mode in ((state, 0o700), (runtime, int(service["RuntimeDirectoryMode"], 8))):
        d.mkdir(parents=True)
        d.chmod(mode)
        os.chown(d, DYNAMIC_UID, DYNAMIC_UID)
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "CREDENTIALS_DIRECTORY": str(creds),
            "STATE_DIRECTORY": str(state), "RUNTIME_DIRECTORY": str(runtime)}  # fmt: skip


def test_routerd_starts_as_the_units_dynamic_user_and_the_documented_status_answers(
    installed: tuple[Root, Path, list[str]],
) -> None:
    root, src, rest = installed
    key = root.path / "etc/routerd/webhook.key"
    unit_env = _as_the_unit(root)
    # The premise: the unit's user cannot read the key itself, only the credential systemd hands it.
    peek = subprocess.run(["cat", str(key)], user=DYNAMIC_UID, group=DYNAMIC_UID, extra_groups=[],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert peek.returncode != 0 and "Permission denied" in peek.stderr
    argv = shlex.split(root.moved(_unit(root)["ExecStart"]))
    proc = subprocess.Popen(argv, user=DYNAMIC_UID, group=DYNAMIC_UID, extra_groups=[], umask=0o077,
                            env=unit_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    log: list[str] = []
    try:
        sock = root.path / "run/routerd/control.sock"
        wait_until(lambda: sock.exists() or proc.poll() is not None, timeout=20, what="the control socket")
        assert proc.poll() is None, proc.communicate()[1]
        for command in rest:
            if command.startswith(NEEDS_SYSTEMD):
                continue
            assert command.startswith(NEEDS_THE_SERVICE), f"the test does not know how to run: {command}"
            out = subprocess.run(["bash", "-c", root.moved(command)], cwd=src, capture_output=True, text=True,
                                 env={**root.env(), "ROUTERD_SOCKET": str(sock)}, check=False)  # fmt: skip
            status = json.loads(out.stdout)
            assert status["router"] == "gw-1"
            assert [s["target"] for s in status["sinks"]] == ["https://prefix.example.net/v1/prefix-state"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)  # a POST in flight may wait out its DNS lookup
        log += err.splitlines()
    assert proc.returncode == 0, "\n".join(log)
    assert any("publishing to webhook https://prefix.example.net/v1/prefix-state; mqtt off; stdout off" in line
               for line in log), "\n".join(log)  # fmt: skip
    assert "0123456789abcdef" not in "\n".join(log)


def test_clusterd_with_routerds_extra_only_says_what_to_install(
    installed: tuple[Root, Path, list[str]],
) -> None:
    root, _, _ = installed
    out = subprocess.run([str(root.path / "opt/routerd/bin/clusterd"), "check-config", "-c", "/dev/null"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert "pip install '.[cluster]'" in line and "yaml" in line
