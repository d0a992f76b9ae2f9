"""clusterd's command line.

clusterd [run] --config FILE   run the controller
clusterd crd                   print the DynamicPrefix CRD (generated from the models)
clusterd check-config FILE     validate a configuration file
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clusterd import __version__
from clusterd import config as cfgmod
from routerd import logs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "crd", "check-config", "-h", "--help", "--version"):
        argv = ["run", *argv]
    p = argparse.ArgumentParser(
        prog="clusterd", description="Keep a cluster in step with a dynamic IPv6 prefix."
    )
    p.add_argument("--version", action="version", version=f"clusterd {__version__}")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the controller (default)")
    run.add_argument("-c", "--config", type=Path, help="YAML configuration (see docs/configuration.md)")
    sub.add_parser("crd", help="print the DynamicPrefix CustomResourceDefinition")
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", type=Path)
    args = p.parse_args(argv)
    try:
        if args.command == "crd":
            from clusterd.crd import crd_yaml

            sys.stdout.write(crd_yaml())
            return 0
        if args.command == "check-config":
            cfgmod.load(args.config)
            print("ok")
            return 0
        cfg = cfgmod.load(args.config)
        logs.setup(cfg.log_level, cfg.log_format)
        from clusterd.daemon import run as run_daemon

        return run_daemon(cfg)
    except cfgmod.ConfigError as e:
        print(f"clusterd: {e}", file=sys.stderr)
        return 2
