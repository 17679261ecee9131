"""Entry point of the `tower` command: parse, dispatch, and turn Tower errors into exit codes.

Exit codes: 0 ok, 1 a run failed or was cancelled, 2 bad input or usage, 130 / 143 a run cancelled
on Ctrl-C / SIGTERM (or a second one, which stops waiting), 141 the reader of stdout went away
(`tower runs | head`). Errors go to stderr; `--json` output goes to stdout alone.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
import threading

from tower import __version__
from tower.errors import CatalogError, TowerError

# Sub-command modules, in the order `tower --help` lists them. Each has register(subparsers).
COMMAND_MODULES = (
    "tower.cli.catalog_cmds",  # validate
    "tower.cli.plan_cmds",  # graph, plan
    "tower.cli.run_cmds",  # run, runs, status, cancel, repair, resume, purge
    "tower.cli.logs_cmds",  # logs
    "tower.cli.serve_cmds",  # serve, events
    "tower.cli.databricks_cmds",  # databricks check-webhooks
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
    _accept_global_options_after(subparsers)
    return parser


def _accept_global_options_after(subparsers) -> None:
    """`tower validate --catalog x.yaml` works as `tower --catalog x.yaml validate` does. The copy
    defaults to SUPPRESS, so a sub-command that does not see it leaves the global value alone."""
    for sub in subparsers.choices.values():
        sub.add_argument("--catalog", metavar="PATH", default=argparse.SUPPRESS,
                         help="catalog file (also accepted before the command)")
        for action in sub._subparsers._group_actions if sub._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                _accept_global_options_after(action)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    from tower.cli.console import command_logging

    try:
        with command_logging():
            code = int(args.handler(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is seen while we can still handle it
        return code
    except BrokenPipeError:
        # `tower runs | head`: the reader has what it wanted. Python would print a traceback at exit
        # flushing stdout: point stdout at /dev/null, and exit as a process killed by SIGPIPE does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except CatalogError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return 2
    except TowerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a second Ctrl-C: one line, and nothing after it
        from tower.cli.interrupts import exit_code

        global _stop_waiting
        _stop_waiting = True

        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # tasks the engine left pending
        print("interrupted", file=sys.stderr)
        return exit_code(exc)


_stop_waiting = False  # set by a second Ctrl-C (or SIGTERM): the exit joins no thread


def entry() -> None:
    """The `tower` command: main(), then an exit that skips the interpreter's finalization.

    Tearing down the module graph of the Functions and Durable SDKs (aiohttp, werkzeug, ...) took
    0.2-0.3 s after every `tower run`, a third of a trivial run's wall time (benchmarks/bench_cli.py).
    By then Tower's work is done: the engine has stopped, the stores have committed. What an exit
    must still do is done here: output flushed, threads joined as at a normal exit (idle executor
    workers included), atexit handlers run. Only the teardown of module objects is skipped.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader gone, or a stream already closed
            pass
    shutdown = getattr(threading, "_shutdown", None)  # what Python runs first at exit (CPython)
    if shutdown is None:
        raise SystemExit(code)
    if not _stop_waiting:  # after a second Ctrl-C no thread is waited for: a cancel may take its grace
        shutdown()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
