"""docs/following-the-prefix.md works as written: its routerd configuration (TOML and UCI) is
valid, its hook scripts pass shellcheck, and the DNS example, run as routerd's command hook,
hands nsupdate the record for the current prefix with the host's suffix.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from routerd.adapters.exec_hook import ExecSink
from routerd.config import ExecSection, parse
from routerd.core.wire import Prefix, PrefixState, PrefixStatus, SourceKind
from routerd.uci import parse_uci
from tests.ground.require import require_program

DOC = Path(__file__).resolve().parents[2] / "docs" / "following-the-prefix.md"


def blocks(lang: str) -> list[str]:
    """The code blocks tagged ``lang`` (every block is matched, so closing fences pair up)."""
    found = re.findall(r"^```(\w*)\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
    return [body for tag, body in found if tag == lang]


def test_the_exec_configuration_is_valid_in_toml_and_uci() -> None:
    (toml,) = [b for b in blocks("toml") if "[[exec]]" in b]
    assert parse(tomllib.loads(toml)).exec == (ExecSection(command=("/usr/local/bin/ddns-nas",), timeout=30),)
    (uci,) = [b for b in blocks("") if b.startswith("config exec")]
    assert parse(parse_uci(uci)).exec == (ExecSection(command=("/usr/bin/ddns-nas",), timeout=30),)


def test_the_hook_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_program("shellcheck", "shellcheck")
    scripts = blocks("sh")
    assert len(scripts) == 4
    for i, body in enumerate(scripts):
        path = tmp_path / f"hook{i}.sh"
        path.write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body)
        out = subprocess.run([shellcheck, "-s", "sh", str(path)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, f"{body}\n{out.stdout}"


async def test_the_dns_example_updates_the_record_to_the_current_prefix_and_suffix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (script,) = [b for b in blocks("sh") if "/usr/local/bin/ddns-nas" in b]
    hook = tmp_path / "ddns-nas"
    hook.write_text(script)
    hook.chmod(0o755)
    # A stand-in for BIND's nsupdate (no DNS server here accepts updates): it keeps what it was given.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nsupdate"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {tmp_path}/update\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")

    sink = ExecSink(ExecSection(command=(str(hook),)))
    await sink.start()
    try:
        for seq, iface, prefix in ((1, "wan", "2001:db8:ff::/64"), (2, "br-lan", "2001:db8:1:2::/64")):
            sink.publish(PrefixState(
                router="edge-1", interface=iface, boot="0123456789abcdef", sequence=seq,
                observed_at="2026-11-29T12:00:00Z",
                prefixes=(Prefix(prefix=prefix, state=PrefixStatus.PREFERRED, valid_lifetime=600,
                                 preferred_lifetime=300, sources=(SourceKind.RA,)),),
            ))  # fmt: skip
        deadline = time.monotonic() + 10
        while sink.queued() or sink.health.running:
            assert time.monotonic() < deadline, sink.health.last_outcome
            await asyncio.sleep(0.05)
    finally:
        await sink.stop()
    assert sink.health.last_outcome == "ok" and sink.health.failures == 0
    assert (tmp_path / "args").read_text().split() == ["-k", "/etc/routerd/ddns.key"]
    update = (tmp_path / "update").read_text().splitlines()
    assert "update add nas.home.example.net 300 AAAA 2001:db8:1:2::1234" in update  # br-lan's, not wan's
    assert update[-1] == "send"
