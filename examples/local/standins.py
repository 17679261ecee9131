"""Start the local stand-ins the example catalog runs against, and print the settings to export.

    make standins                                     # installs fakesnow into .venv, then runs this
    .venv/bin/python examples/local/standins.py       # fakesnow on 8765, the scoring service on 8766
    .venv/bin/python examples/local/standins.py --port-base 9100

It runs until Ctrl-C (or SIGTERM), then stops both. Snowflake is a fakesnow server (the real
connector talks to it over HTTP); the scoring service is a small aiohttp app with the 202 pattern.

The settings the catalog reads (ports, and the stand-in's password) are printed as ``export`` lines
and written to an env file (``.tower/standins.env``; ``--env-file``) that another shell sources.
The catalog itself holds no secret, not even a default: ``password: ${SNOWFLAKE_PASSWORD}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import time
from pathlib import Path

import fakesnow_process  # beside this file: run as a script, its directory is on sys.path
from aiohttp import web

SCORING_SECONDS = 3.0  # how long a scoring job "runs"


def create_database(port: int, database: str, schema: str) -> None:
    """A real account has its database already; a fresh fakesnow server needs one."""
    import snowflake.connector

    with snowflake.connector.connect(user="tower", password="local", account="fakesnow", host="127.0.0.1",
                                     port=port, protocol="http",
                                     session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False}) as conn:
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        conn.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS {database}.{schema}")


def scoring_app() -> web.Application:
    """POST /scores → 202 + Location; GET /scores/<id> → running, then succeeded; POST .../cancel."""
    jobs: dict[str, dict] = {}
    by_key: dict[str, str] = {}
    ids = itertools.count(1)

    async def create(request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        if key not in by_key:  # same key → same job: a retried submit never scores twice
            job_id = str(next(ids))
            body = await request.json()
            jobs[job_id] = {"started": time.monotonic(), "state": "running", "params": body.get("params", {})}
            by_key[key] = job_id
        return web.json_response({"id": by_key[key]}, status=202, headers={"Location": f"/scores/{by_key[key]}"})

    async def status(request: web.Request) -> web.Response:
        job = jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": "no such job"}, status=404)
        if job["state"] == "running" and time.monotonic() - job["started"] >= SCORING_SECONDS:
            job["state"] = "succeeded"
        if job["state"] == "running":
            return web.json_response({"status": "running"}, status=202, headers={"Retry-After": "1"})
        return web.json_response({"status": job["state"], "scored": 1234, "params": job["params"]})

    async def cancel(request: web.Request) -> web.Response:
        job = jobs.get(request.match_info["id"])
        if job is not None and job["state"] == "running":
            job["state"] = "cancelled"
        return web.json_response({}, status=202)

    app = web.Application()
    app.add_routes([web.post("/scores", create), web.get("/scores/{id}", status),
                    web.post("/scores/{id}/cancel", cancel)])
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(scoring_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def settings(snow_port: int, http_port: int) -> str:
    """The ``export`` lines the example catalog needs (fakesnow accepts any password)."""
    return (f"export FAKESNOW_PORT={snow_port}\n"
            "export SNOWFLAKE_PASSWORD=local\n"
            f"export SCORING_URL=http://127.0.0.1:{http_port}\n")


def write_env_file(path: Path, exports: str) -> None:
    """The exports, readable by the owner alone (a real password would live in such a file too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(exports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-base", type=int, default=8765, help="fakesnow port; the service gets the next one")
    parser.add_argument("--env-file", type=Path, default=Path(".tower/standins.env"),
                        help="where to write the settings to source (default: .tower/standins.env)")
    args = parser.parse_args()
    snow_port, http_port = args.port_base, args.port_base + 1
    try:
        fakesnow, _ = fakesnow_process.start(snow_port)
    except RuntimeError as exc:
        sys.exit(str(exc))
    try:
        create_database(snow_port, "local_demo", "sales")
        exports = settings(snow_port, http_port)
        write_env_file(args.env_file, exports)
        print(exports, end="")
        print(f"# stand-ins running; the same settings are in {args.env_file}: in another shell,\n"
              f"#   . {args.env_file}\n# Ctrl-C stops them", file=sys.stderr, flush=True)
        sys.stdout.flush()
        asyncio.run(serve(http_port))
    finally:
        fakesnow_process.stop(fakesnow)


if __name__ == "__main__":
    main()
