"""`tower logs RUN SERVICE`: what one service of a run said, and the details `tower status` adds.

A command's output is in `$TOWER_HOME/commands/` under a hashed name: this finds it by the run,
service and attempt (tower.platforms.command.output_files). Other platforms keep their output
remotely: the logs show the remote id (a Snowflake query id, a Databricks run), the run page URL,
and the output the platform gave back (a small query result, a job's notebook output).
"""

from __future__ import annotations

from pathlib import Path

from tower.cli.common import tower_home
from tower.cli.render import NOT_STARTED
from tower.errors import UsageError
from tower.states import ServiceState

LOG_BYTES = 64 * 1024  # at most this much of each file: its end, where the reason usually is


def register(subparsers) -> None:
    logs = subparsers.add_parser(
        "logs", help="show what one service of a run printed (command output, query id, run page)",
        description="Print the output of SERVICE in RUN_ID: a command's stdout and stderr (every attempt, "
                    "or --attempt N), a Snowflake query id and result preview, a Databricks run page URL.")
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("service", metavar="SERVICE")
    logs.add_argument("--attempt", type=int, metavar="N", help="only attempt N (default: every attempt)")
    logs.set_defaults(handler=cmd_logs)


def platform_type(plan: dict | None, service: str) -> str | None:
    try:
        return plan["platforms"][plan["services"][service]["platform"]]["type"]
    except (KeyError, TypeError):
        return None


def with_submitted_details(home: Path, plan: dict | None, result: dict) -> dict:
    """A running run's services with the attempt, remote id and URL their `service_run` shows as soon
    as the work is submitted (the run ledger has them only when the service ends)."""
    from tower.local.store import read_status

    if not isinstance(plan, dict):
        return result
    for name, svc in (result.get("services") or {}).items():
        if svc.get("status") != ServiceState.RUNNING or svc.get("remote_id"):
            continue
        iid = (plan["services"].get(name) or {}).get("iid")
        status = read_status(home, iid) if iid else None
        shown = (status or {}).get("customStatus")
        if isinstance(shown, dict):
            svc.update({key: shown[short] for key, short in (("attempts", "a"), ("remote_id", "rid"), ("url", "url"))
                        if shown.get(short) is not None})
    return result


def log_lines(home: Path, info, result: dict) -> list[str]:
    """For `tower status`: the run pages of the running services, where each failed service's
    output is and the command that shows it."""
    pages = [f"  {name}: {svc['url']}" for name, svc in (result.get("services") or {}).items()
             if svc.get("status") == ServiceState.RUNNING and svc.get("url")]
    lines = []
    for name, svc in (result.get("services") or {}).items():
        if svc.get("status") != ServiceState.FAILED:
            continue
        where = ""
        if platform_type(info.plan, name) == "command" and svc.get("attempts"):
            from tower.platforms.command import output_files

            where = f" ({output_files(home, info.run_id, name, svc['attempts'])[1][1]})"
        lines.append(f"  tower logs {info.run_id} {name}{where}")
    return ((["run pages of the running services:", *pages] if pages else [])
            + (["output of the failed services:", *lines] if lines else []))


def cmd_logs(args) -> int:
    from tower.redact import redact
    from tower.runner import run_info
    from tower.runs.plan import names_hint

    home = tower_home()
    info = run_info(home, args.run_id)
    services = (info.plan or {}).get("services") or {}
    if args.service not in services:
        raise UsageError(f"run {args.run_id} has no service {args.service!r}"
                         f" ({names_hint(args.service, services, 'its services')})")
    result = with_submitted_details(home, info.plan, info.to_result())
    svc = result["services"].get(args.service) or {}
    ptype = platform_type(info.plan, args.service) or "?"
    attempts = int(svc.get("attempts") or 0)
    print(f"{args.service} ({ptype}) in run {args.run_id}: {svc.get('status', ServiceState.PENDING)}"
          f"{f', attempt {attempts}' if attempts else ''}")
    if svc.get("remote_id"):
        print(f"{'query id' if ptype == 'snowflake' else 'remote id'}: {svc['remote_id']}")
    if svc.get("url"):
        print(f"run page: {svc['url']}")
    if svc.get("error"):
        print(f"error: {redact(svc['error'])}")
    if ptype == "command":
        _print_command_output(home, args.run_id, args.service, attempts, args.attempt)
    elif svc.get("output"):
        print("output:")
        print(redact(str(svc["output"])))
    elif not attempts and svc.get("status") in (None, *NOT_STARTED):
        print("(it did not run)")
    return 0


def _print_command_output(home: Path, run_id: str, service: str, attempts: int, only: int | None) -> None:
    from tower.platforms.command import output_files
    from tower.redact import redact

    if only is not None and not 1 <= only <= max(attempts, 1):
        raise UsageError(f"service {service!r} made {attempts} attempt(s) in run {run_id}: --attempt 1..{attempts}")
    for attempt in [only] if only else range(1, attempts + 1):
        for label, path in output_files(home, run_id, service, attempt):
            if not path.exists():
                continue
            text = _end_of(path)
            if text.strip():
                print(f"--- attempt {attempt} {label} ({path}) ---")
                print(redact(text.rstrip("\n")))


def _end_of(path: Path) -> str:
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - LOG_BYTES))
        data = handle.read()
    prefix = f"[… the first {size - LOG_BYTES} bytes are in the file]\n" if size > LOG_BYTES else ""
    return prefix + data.decode("utf-8", errors="replace")
