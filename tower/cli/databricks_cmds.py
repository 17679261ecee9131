"""`tower databricks check-webhooks`: which of the catalog's Databricks jobs do not call Tower's
notification destination on success and on failure (push completion, docs/deploy.md)."""

from __future__ import annotations

from tower.cli.common import load_catalog, plural, print_json

EVENTS = ("on_success", "on_failure")


def register(subparsers) -> None:
    parser = subparsers.add_parser("databricks", help="Databricks helpers (push completion)",
                                   description="Databricks helpers.")
    commands = parser.add_subparsers(dest="databricks_command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check-webhooks",
        help="list the catalog's Databricks jobs that do not notify Tower when they end",
        description="Read each Databricks job of the catalog (jobs.get) and list those whose webhook "
        "notifications on success and on failure lack the destination that calls Tower's "
        "POST /api/notify/databricks. Exit 0 when every job has it, 1 when some miss it.")
    check.add_argument("--destination", required=True, metavar="ID",
                       help="the notification destination's id (workspace settings, Notification destinations)")
    check.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    check.set_defaults(handler=check_webhooks)


def check_webhooks(args) -> int:
    from tower.catalog.env import resolve
    from tower.platforms import adapter_for

    catalog = load_catalog(args)
    missing, checked = [], 0
    for name, platform in catalog.platforms.items():
        if platform.type != "databricks":
            continue
        adapter = adapter_for("databricks", resolve(platform.settings, where=f"platform {name!r}"))
        jobs: dict[int, list[str]] = {}
        for service in sorted(catalog.services.values(), key=lambda s: s.name):
            if service.platform == name and str(service.spec.get("job_id", "")).isdigit():
                jobs.setdefault(int(service.spec["job_id"]), []).append(service.name)
        for job_id, services in sorted(jobs.items()):
            checked += 1
            hooks = adapter.webhooks(job_id)
            lacking = [event for event in EVENTS if args.destination not in hooks[event]]
            if lacking:
                missing.append({"job_id": job_id, "platform": name, "services": services, "missing": lacking})
    if args.json:
        print_json({"ok": not missing, "checked": checked, "missing": missing})
    else:
        for job in missing:
            print(f"job {job['job_id']} on {job['platform']} ({', '.join(job['services'])}) does not notify the destination "
                  f"{' or '.join(job['missing'])}")
        print(f"{plural(checked, 'Databricks job')} checked, {len(missing)} missing the destination")
    return 1 if missing else 0
