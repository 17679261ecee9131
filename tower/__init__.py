"""Tower: an event-driven orchestrator for data services on Azure Durable Functions.

The library registers no Azure functions; the app shell (``function_app.py``, ``app_runtime.py``,
``triggers/``, ``orchestrators/``, ``activities/``) does. Only ``tower.local`` (the local host)
imports the Functions SDKs, and platform SDKs are imported lazily where used, so the CLI starts fast
(``tests/test_layering.py`` holds all three, and that no two modules import each other at load).

How the modules fit, in the order a run meets them:

    catalog/        the catalog file: YAML with file:line, validated whole, frozen model
    graph           DAG algorithms: selection, order, critical path, lower bounds
    schedules       cron in IANA time zones, evaluated by one tick; run_request: the API's run body
    runs/           a run's state: plan, scheduler, ledger (+ its SQLite and Table stores), slots,
                    history, index (see its docstring)
    contracts       what crosses the activity boundary, typed
    states          the state sets: remote, service, run, Durable runtime
    platforms/      one adapter per platform (submit, poll, cancel), Platforms: the registry
    polling, push   when to look at remote work again; which run a platform's notification is about
    runtime         what one process shares (stores, adapters, notifier), built by a composition root
    notify, events, deadlines, telemetry, board, openapi   what a run tells the world
    errors, durable_errors   one rooted error tree; the Durable client's failures translated once
    stores, paths, timestamps, processes, logcontext, redact, names   plumbing
    runner, cli/    runs from any process; the `tower` command
    local/          the local Durable host: engine, management API, bus, timers, latency model
"""

__version__ = "0.1.0"
