"""Entry point of the `tower` command: parse, dispatch, and turn Tower errors into exit codes.

Exit codes: 0 ok, 1 a run failed or was cancelled, 2 bad input or usage. Errors go to stderr;
`--json` output goes to stdout alone.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tower import __version__
from tower.errors import CatalogError, TowerError

# Sub-command modules, in the order `tower --help` lists them. Each has register(subparsers).
COMMAND_MODULES = (
    "tower.cli.catalog_cmds",  # validate
    "tower.cli.plan_cmds",  # graph, plan
    "tower.cli.run_cmds",  # run, runs, status, cancel, repair, resume, purge
    "tower.cli.logs_cmds",  # logs
    "tower.cli.serve_cmds",  # serve, events
)

EPILOG = """\
examples:
  tower validate                                 check ./catalog.yaml (or $TOWER_CATALOG)
  tower --catalog examples/refinery/catalog.yaml plan nightly --concurrency lakehouse=2
  tower graph nightly --format mermaid
  tower run nightly --simulate --time-scale 0.001
  tower run adhoc --param date=2026-11-24 --services +publish_finance_pack
  tower runs; tower status RUN_ID --json; tower cancel RUN_ID; tower repair RUN_ID
  tower runs --pipeline nightly --status failed --since 7d
  tower purge --older-than 30d                   delete old runs' details (their ids stay used)
  tower serve                                    local Functions host on 127.0.0.1:7071
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tower",
        description="Tower: run data services in dependency order, on schedules, events and demand.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tower {__version__}")
    parser.add_argument(
        "--catalog",
        metavar="PATH",
        help="catalog file (default: $TOWER_CATALOG, else ./catalog.yaml)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except CatalogError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return 2
    except TowerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
