"""Run the benchmarks: ``python -m bench [--quick] [--out FILE] [suite ...]``.

Suites: routerd, clusterd, ha (default: all). Prints a table and writes
bench/results/latest.json (or FILE) with the machine and component versions.
``--openwrt-python PYTHON`` also measures routerd's footprint under PYTHON
(scripts/bench passes a venv holding OpenWrt's feed versions).
``--quick`` runs every suite with tiny counts: a check that the benchmarks
still work, not a measurement. Benchmarks report; they never fail a build.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import machine, package_version, tool_version

RESULTS = Path(__file__).resolve().parent / "results"

# Sizes for a real run and for --quick.
FULL: dict[str, Any] = {
    "routerd": {"changes": 200, "flood_ras": 10_000, "idle_seconds": 60.0, "paced_seconds": 30.0},
    "clusterd": {"changes": 60, "idle_seconds": 60.0},
    "ha": {"sizes": [100, 1000, 3000], "pools": 100, "idle_seconds": 20.0},
}
QUICK: dict[str, Any] = {
    "routerd": {"changes": 10, "flood_ras": 200, "idle_seconds": 1.0, "paced_seconds": 1.0},
    "clusterd": {"changes": 3, "idle_seconds": 1.0},
    "ha": {"sizes": [10, 30], "pools": 3, "idle_seconds": 1.0},
}


def run_routerd(work: Path, sizes: dict[str, Any], openwrt_python: str | None = None) -> dict[str, Any]:
    from bench import routerd_bench

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    out = {
        "core": routerd_bench.core_per_ra(),
        "lab": routerd_bench.lab_run(work / "routerd", mosquitto, passwd, **sizes),
        "nftables": routerd_bench.nft_sink(work / "routerd-nft", mosquitto, passwd, sizes["changes"]),
    }
    if openwrt_python:  # the same footprint on OpenWrt's feed versions (scripts/bench makes that venv)
        out["openwrt_versions"] = routerd_bench.footprint(
            work / "routerd-openwrt", mosquitto, passwd, openwrt_python, sizes["flood_ras"]
        )
    return out


def run_clusterd(work: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    from bench import clusterd_bench

    return clusterd_bench.run(work / "clusterd", **sizes)


def run_ha(work: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    """One prefix change at each size, each on a fresh apiserver so sizes do not share a cache."""
    from bench import clusterd_bench, ha_bench
    from tests.ground import crds

    runs: dict[str, Any] = {}
    for services in sizes["sizes"]:
        kube = clusterd_bench.setup_kube(work / f"ha-{services}", crds.cilium())  # all: cilium-operator runs
        try:
            runs[f"{services}_services"] = ha_bench.run(
                kube, work / f"ha-{services}", services=services, pools=sizes["pools"],
                idle_seconds=sizes["idle_seconds"],
            )  # fmt: skip
        finally:
            kube.stop()
    return {"runs": runs, "growth": ha_bench.growth(list(runs.values()))}


SUITES = {"routerd": run_routerd, "clusterd": run_clusterd, "ha": run_ha}


def versions() -> dict[str, str]:
    from tests.ground import testbin

    out = {d: package_version(d) for d in ("pydantic", "paho-mqtt", "pyroute2", "kubernetes", "aiohttp")}
    out["mosquitto"] = tool_version([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"])
    for tool in ("kube-apiserver", "etcd", "cilium-operator-generic"):
        path = testbin.find(tool)
        out[tool] = tool_version([str(path), "--version"]) if path else "not built"
    return out


def table(results: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for k, v in results.items():
        if isinstance(v, dict):
            rows += table(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", str(v)))
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="*", metavar="suite", help=f"any of {list(SUITES)} (default: all)")
    ap.add_argument(
        "--quick", action="store_true", help="tiny counts: checks the benchmarks run, measures nothing"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/latest.json)")
    ap.add_argument(
        "--openwrt-python", default=None, metavar="PYTHON",
        help="also measure routerd's footprint under this interpreter (a venv with OpenWrt's feed versions)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    names = args.suites or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s) {unknown}: choose from {list(SUITES)}")
    sizes = QUICK if args.quick else FULL
    doc: dict[str, Any] = {"machine": machine(), "versions": versions(), "quick": args.quick, "results": {}}
    out: Path = args.out or RESULTS / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.out is None and out.exists():  # keep the other suites' latest numbers
        doc["results"] = json.loads(out.read_text()).get("results", {})
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        for name in names:
            if name == "routerd":
                doc["results"][name] = run_routerd(Path(tmp), sizes[name], args.openwrt_python)
            else:
                doc["results"][name] = SUITES[name](Path(tmp), sizes[name])
            out.write_text(json.dumps(doc, indent=2) + "\n")  # after each suite: a later crash loses nothing
    rows = table({n: doc["results"][n] for n in names})
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
