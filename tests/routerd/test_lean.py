"""routerd's entry point keeps pydantic's plugin scan (importlib.metadata) out of memory."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import routerd.cli
from routerd import config
from routerd.core import wire
cfg = config.parse({"router_id": "r1", "interface": [{"name": "eth0"}]}, "probe")
msg = wire.PrefixState(router="r1", interface="eth0", boot="0123456789abcdef", sequence=7,
                       observedAt="2026-11-26T00:00:00Z", prefixes=())
assert wire.decode(msg.to_json()) == msg
assert "$id" in wire.json_schema()
try:
    config.parse({"router_id": "r1", "interface": [{"name": "eth0", "bogus": 1}]}, "probe")
    rejected = False
except config.ConfigError:
    rejected = True
print(json.dumps({
    "metadata_loaded": "importlib.metadata" in sys.modules,
    "loader": sys.modules["pydantic.plugin._loader"].get_plugins.__module__,
    "rejected": rejected,
    "router_id": cfg.router_id,
}))
"""


def _probe(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_routerd_entry_point_builds_models_without_importlib_metadata() -> None:
    got = _probe(PROBE)
    assert got == {"metadata_loaded": False, "loader": "routerd.lean", "rejected": True, "router_id": "r1"}


def test_pydantic_loader_already_imported_is_left_alone() -> None:
    got = _probe("import pydantic.plugin._loader\n" + PROBE)
    assert got["loader"] == "pydantic.plugin._loader"
    assert got["metadata_loaded"] is True
    assert got["rejected"] is True


LAZY_PROBE = """
import importlib.util, json, sys
import routerd.cli
lazy = type(sys.modules.get("urllib.request")).__name__ == "_LazyModule"
registered = lazy and "http.client" not in sys.modules
import routerd.adapters.mqtt
import paho.mqtt
after_sink = "http.client" in sys.modules
import urllib.request
proxies = urllib.request.getproxies()  # the first use loads it, if nothing did before
print(json.dumps({
    "paho": paho.mqtt.__version__,
    "socks": importlib.util.find_spec("socks") is not None,
    "registered": registered,
    "after_sink": after_sink,
    "after_use": "http.client" in sys.modules and isinstance(proxies, dict),
}))
"""


def test_urllib_request_is_loaded_only_when_used() -> None:
    got = _probe(LAZY_PROBE)
    # Neither tox environment installs PySocks, so routerd's trim applies in both.
    assert (got["socks"], got["registered"]) == (False, True), got
    if str(got["paho"]).startswith("1."):  # OpenWrt's feed (openwrt env): paho 1.6 never reads proxy settings
        assert got["after_sink"] is False, got
    else:  # current releases (py env): paho 2.x's `import urllib.request` loads it at once on Python 3.11
        assert got["after_sink"] is True, got
    assert got["after_use"] is True, got


def test_webhook_sink_loads_urllib_request_when_imported() -> None:
    got = _probe(
        "import json, sys\nimport routerd.cli\nimport routerd.adapters.webhook\n"
        "print(json.dumps({'loaded': type(sys.modules['urllib.request']).__name__ == 'module'}))"
    )
    assert got == {"loaded": True}
