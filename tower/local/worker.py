"""Another host over a home: `python -m tower.local.worker HOME [--app MODULE:FACTORY]
[--activities-only] [--max-activities N]`.

Runs the app's functions on an engine over `HOME` beside any other engine there (`tower serve`,
`tower run`, a test's engine), cooperating as the Azure Storage backend's workers do: the engine
holding the orchestration lease runs orchestrations, every engine takes activity work items, each
item has one owner. With --activities-only it never runs orchestrations: a second worker process, as
`FUNCTIONS_WORKER_PROCESS_COUNT` or a scale-out gives in Azure, so that per-process state (caches,
in-flight sets) meets another process. Prints one JSON line when ready; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading

from tower.local.engine import Engine


def load_app(spec: str):
    """`module:factory` -> a fresh app (a DFApp's functions can be read once, so a factory)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--app {spec!r}: expected MODULE:FACTORY, e.g. tower.local.driver:run_app")
    return getattr(importlib.import_module(module), name)()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tower.local.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("home")
    parser.add_argument("--app", default="tower.local.driver:run_app", help="MODULE:FACTORY of the app (default: Tower's)")
    parser.add_argument("--activities-only", action="store_true", help="never run orchestrations")
    parser.add_argument("--max-activities", type=int, default=None, help="activities in flight at once")
    parser.add_argument("--activity-workers", type=int, default=8)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)          # the SDK's warning about a non-HTTP app's auth level
    try:
        engine = Engine(load_app(args.app), args.home, orchestrations=not args.activities_only,
                        max_activities=args.max_activities, activity_workers=args.activity_workers,
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        logging.disable(logging.NOTSET)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    engine.start()
    print(json.dumps({"ready": engine.host_id, "pid": os.getpid(), "leader": engine.is_leader,
                      "base_url": engine.base_url}), flush=True)
    stop.wait()
    engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
