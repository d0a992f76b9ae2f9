"""The benchmarks still run: ``python -m bench --quick`` end to end, numbers not judged.

Benchmarks report and never fail a build on their numbers; this only keeps
the benchmark code from rotting. It checks the document's shape and the two
counts that are exact rather than timings: API writes for one change equal
the objects changed, and a repeated message costs none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ground import require, testbin

pytestmark = [pytest.mark.apiserver, pytest.mark.mqtt, pytest.mark.lab, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_every_suite(tmp_path: Path) -> None:
    require.require_root()
    require.require_program("mosquitto", "mosquitto")
    require.require_program("nft", "nftables")
    if not (
        testbin.find("kube-apiserver") and testbin.find("etcd") and testbin.find("cilium-operator-generic")
    ):
        require.missing("kube-apiserver/etcd/cilium-operator test binaries (scripts/test builds them)")
    out = tmp_path / "bench.json"
    latest = ROOT / "bench/results/latest.json"
    before = latest.read_bytes() if latest.exists() else None
    proc = subprocess.run(
        # this interpreter stands in for the OpenWrt-versions venv: the code path runs, versions are reported
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--openwrt-python", sys.executable],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    assert doc["versions"]["kube-apiserver"].startswith("Kubernetes v1.")
    assert set(doc["results"]) == {"routerd", "clusterd", "ha"}
    lab = doc["results"]["routerd"]["lab"]
    assert lab["ra_to_mqtt"]["n"] == 10
    assert lab["flood"]["accepted"] == lab["flood"]["ras"]
    nft = doc["results"]["routerd"]["nftables"]
    assert nft["sink_ok"] is True and nft["transaction"]["nft_f_spawned_ms"]["n"] == 10
    owrt = doc["results"]["routerd"]["openwrt_versions"]
    assert owrt["ras"] == lab["flood"]["ras"]
    assert owrt["versions"]["pydantic"] == doc["versions"]["pydantic"]
    for transport in ("mqtt", "webhook"):
        assert doc["results"]["clusterd"][transport]["ra_to_pool"]["n"] == 3
    runs = doc["results"]["ha"]["runs"]
    assert sorted(r["services"] for r in runs.values()) == [10, 30]
    for r in runs.values():
        assert r["change"]["api_writes"] == r["change"]["objects_changed"], r
        assert r["change"]["lbipam_service_status_writes"] >= r["services"], (
            r
        )  # LB-IPAM gave each its B address
        assert r["repeated_message"]["api_writes"] == 0, r
    assert "10->30" in doc["results"]["ha"]["growth"]
    assert "ha.growth.10->30.converge_ms_per_service" in proc.stdout  # the table
    assert (latest.read_bytes() if latest.exists() else None) == before, "--out must leave latest.json alone"
