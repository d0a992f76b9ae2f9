"""Run the benchmarks: ``python -m bench [suite ...]`` (suites: routerd, clusterd).

Prints a table and writes bench/results/latest.json with the machine and
component versions. Benchmarks report; they never fail a build.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import machine, package_version, tool_version

RESULTS = Path(__file__).resolve().parent / "results"


def run_routerd(work: Path) -> dict[str, Any]:
    from bench import routerd_bench

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    return {
        "core": routerd_bench.core_per_ra(),
        "lab": routerd_bench.lab_run(work / "routerd", mosquitto, passwd),
    }


def run_clusterd(work: Path) -> dict[str, Any]:
    from bench import clusterd_bench

    return clusterd_bench.run(work / "clusterd")


def run_ha(work: Path) -> dict[str, Any]:
    from bench import clusterd_bench, ha_bench

    kube = clusterd_bench.setup_kube(work / "ha")
    try:
        return {"1000_services_1_pool": ha_bench.run(kube, work / "ha", services=1000, pools=1)}
    finally:
        kube.stop()


SUITES = {"routerd": run_routerd, "clusterd": run_clusterd, "ha": run_ha}


def table(results: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for k, v in results.items():
        if isinstance(v, dict):
            rows += table(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", str(v)))
    return rows


def main(argv: list[str]) -> int:
    names = argv or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s) {unknown}; choose from {list(SUITES)}", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {
        "machine": machine(),
        "versions": {
            "pydantic": package_version("pydantic"),
            "pyroute2": package_version("pyroute2"),
            "mosquitto": tool_version(["mosquitto", "-h"]),
        },
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        for name in names:
            doc["results"][name] = SUITES[name](Path(tmp))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    if out.exists():  # keep the other suites' latest numbers
        previous = json.loads(out.read_text())
        doc["results"] = {**previous.get("results", {}), **doc["results"]}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    rows = table({n: doc["results"][n] for n in names})
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
