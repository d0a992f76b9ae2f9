"""clusterd's command line.

clusterd [run] -c FILE          run the controller (the default command)
clusterd crd                    print the DynamicPrefix CRD (generated from the models)
clusterd check-config -c FILE   validate a configuration file

Every command that reads the configuration takes ``-c/--config FILE``, as routerd's do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clusterd import __version__
from routerd import lean, logs

if TYPE_CHECKING:
    from clusterd.config import Config

COMMANDS = ("run", "crd", "check-config")
INSTALL_HINT = "install its extra from a clone: pip install '.[cluster]' (scripts/run installs routerd only)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clusterd",
        description="Keep a cluster in step with a dynamic IPv6 prefix.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Without a command clusterd runs the controller: `clusterd -c FILE` is `clusterd run -c FILE`.\n"
        "`clusterd run --help` lists its options; `clusterd COMMAND --help` those of the other commands.",
    )
    p.add_argument("--version", action="version", version=f"clusterd {__version__}")
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    config_help = "YAML configuration (docs/configuration.md)"
    run = sub.add_parser("run", help="run the controller (the default command)")
    run.add_argument(
        "-c", "--config", type=Path, metavar="FILE", help=f"{config_help}; default: every key's default"
    )
    sub.add_parser("crd", help="print the DynamicPrefix CustomResourceDefinition")
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.set_defaults(usage_error=check.error)
    check.add_argument("-c", "--config", type=Path, metavar="FILE", help=config_help)
    check.add_argument("file", nargs="?", type=Path, help="the same as -c FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help", "--version"):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    # clusterd uses no pydantic plugins: skip their scan (importlib.metadata and more, ~1 MB, ~40 ms).
    lean.skip_pydantic_plugins()
    try:
        from clusterd import config as cfgmod
    except ModuleNotFoundError as e:
        print(f"clusterd: the Python module {e.name} is missing: {INSTALL_HINT}", file=sys.stderr)
        return 1
    try:
        if args.command == "crd":
            from clusterd.crd import crd_yaml

            sys.stdout.write(crd_yaml())
            return 0
        if args.command == "check-config":
            if (args.config is None) == (args.file is None):
                args.usage_error("name one file: -c FILE (or FILE)")
            path = args.config or args.file
            cfgmod.load(path)
            print(f"ok: read {path}")
            return 0
        cfg = cfgmod.load(args.config)
        logs.setup(cfg.log_level, cfg.log_format)
        return _run(cfg)
    except cfgmod.ConfigError as e:
        print(f"clusterd: {e}", file=sys.stderr)
        return 2


def _run(cfg: Config) -> int:
    """The controller, with its imports' and the cluster credentials' failures as one line each."""
    try:
        from clusterd.adapters.kubeconfig import NoCredentials
        from clusterd.daemon import run as run_daemon
    except ModuleNotFoundError as e:
        print(f"clusterd: the Python module {e.name} is missing: {INSTALL_HINT}", file=sys.stderr)
        return 1
    try:
        return run_daemon(cfg)
    except NoCredentials as e:
        print(
            f"clusterd: no Kubernetes credentials ({e}): outside a pod, set kubeconfig: in the configuration "
            "or KUBECONFIG (default ~/.kube/config)",
            file=sys.stderr,
        )
        return 2
