"""Checks that need the whole service graph: dependencies, cycles, and pipelines with their
selectors, schedules (cron + IANA time zone) and events."""

from __future__ import annotations

import re
from typing import Any

from tower.catalog.checks import (
    INVALID,
    Checker,
    Where,
    check_name,
    check_params,
    check_string_list,
    check_text,
    close_match,
    did_you_mean,
    kind,
)
from tower.catalog.fields import DEADLINE_FIELDS, PIPELINE_FIELDS, SCHEDULE_FIELDS
from tower.catalog.model import CATCHUP_POLICIES, Deadline, Location, Pipeline, Schedule, Service
from tower.catalog.yamlsource import Mapping
from tower.graph import find_cycle, resolve_selector

MAX_CYCLES_REPORTED = 10
CRON_FIELDS = "minute hour day-of-month month day-of-week"
CRON_EXAMPLE = 'e.g. "30 2 * * *" for 02:30 every day'
CRON_RANGES = {"minute": "0-59", "hour": "0-23", "day-of-month": "1-31", "month": "1-12 or JAN-DEC",
               "day-of-week": "0-6 (0 is Sunday) or SUN-SAT"}


def check_graph(ck: Checker, services: dict[str, Service], dep_locations: dict[str, dict[str, Location]]) -> None:
    """Unknown dependencies (with "did you mean") and dependency cycles, each cycle once."""
    for name, deps in dep_locations.items():
        for dep, location in deps.items():
            if dep not in services:
                ck.add(location, ("services", name, "depends_on"), f"depends on unknown service '{dep}'",
                       did_you_mean(dep, [s for s in services if s != name], "declared services"))
    graph = {name: [dep for dep in svc.depends_on if dep in services] for name, svc in services.items()}
    for _ in range(MAX_CYCLES_REPORTED):
        cycle = find_cycle(graph)
        if not cycle:
            break
        first, second = cycle[0], cycle[1]
        ck.add(dep_locations[first][second], ("services", first, "depends_on"),
               f"dependency cycle: {' -> '.join(cycle)}", "remove one of these dependencies")
        graph[first].remove(second)  # so the next search finds a different cycle


def check_pipelines(ck: Checker, section: Any, location: Location, services: dict[str, Service]):
    section = ck.mapping(section, location, ("pipelines",), "pipelines: {nightly: {schedule: '30 2 * * *'}}")
    deps = {name: svc.depends_on for name, svc in services.items()}
    tags = {name: svc.tags for name, svc in services.items()}
    pipelines: dict[str, Pipeline] = {}
    for name, raw in (section or {}).items():
        where = ("pipelines", name)
        key_location = section.key_location(name)
        check_name(ck, name, key_location, where)
        raw = ck.mapping(raw, section.value_location(name), where, "{services: ['*'], schedule: '30 2 * * *'}")
        if raw is None:
            continue
        ck.unknown_keys(raw, PIPELINE_FIELDS, where)

        def field(key: str, where=where, raw=raw) -> tuple[Any, Location, Where]:
            return raw[key], raw.value_location(key), (*where, key)

        selectors = ("*",)  # no services key: the whole catalog
        if "services" in raw:
            selectors = _check_selectors(ck, *field("services"), deps, tags)
        timezone = _check_timezone(ck, *field("timezone")) if "timezone" in raw else None
        schedule = _check_schedule(ck, *field("schedule"), timezone) if "schedule" in raw else None
        events = _check_events(ck, *field("on_event")) if "on_event" in raw else ()
        params = check_params(ck, *field("params")) if "params" in raw else {}
        deadline = _check_deadline(ck, *field("deadline"), timezone) if "deadline" in raw else None
        priority = _check_priority(ck, *field("priority")) if "priority" in raw else 0
        pipelines[name] = Pipeline(
            name=name,
            selectors=selectors if selectors is not INVALID else ("*",),
            schedule=schedule if schedule is not INVALID else None,
            on_event=events if events is not INVALID else (),
            params=params if params is not INVALID else {},
            priority=priority if priority is not INVALID else 0,
            location=key_location,
            deadline=deadline if deadline is not INVALID else None,
        )
    return pipelines


PRIORITY_RANGE = (-100, 100)


def _check_priority(ck: Checker, value: Any, location: Location, where: Where):
    """A whole number in PRIORITY_RANGE: its waiting services get shared platform slots first."""
    low, high = PRIORITY_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        ck.add(location, where, f"expected a whole number from {low} to {high}, got {value!r}",
               "e.g. priority: 10 (higher goes first when platform slots are scarce; default 0)")
        return INVALID
    return value


def _check_selectors(ck: Checker, value: Any, location: Location, where: Where, deps, tags):
    example = "services: [ingest_orders+, tag:finance]"
    if isinstance(value, str):
        value_items = [(value, location)]
    else:
        value_items = check_string_list(ck, value, location, where, example, "selectors", "a selector")
        if value_items is INVALID:
            return INVALID
        if not value_items:
            ck.add(location, where, "selects no services", "list selectors, or remove the key to select every service")
            return INVALID
    all_tags = sorted({tag for service_tags in tags.values() for tag in service_tags})
    for selector, item_location in value_items:
        try:
            chosen = resolve_selector(selector, deps, tags)
        except ValueError as exc:
            what, _, hint = str(exc).partition(" (")
            ck.add(item_location, where, what, hint.rstrip(")") or "write 'name', 'name+', '+name', 'tag:x' or '*'")
            continue
        if not chosen:
            text = selector.strip()
            if text.startswith("tag:"):
                hint = did_you_mean(text[4:].strip(), all_tags, "tags in use")
            else:
                hint = did_you_mean(text.strip("+"), list(deps), "declared services")
            ck.add(item_location, where, f"selector '{selector}' matches no service", hint)
    return tuple(selector for selector, _ in value_items)


def _check_timezone(ck: Checker, value: Any, location: Location, where: Where):
    import zoneinfo

    if check_text(ck, value, location, where, "timezone: Europe/London") is INVALID:
        return INVALID
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        zones = sorted(zoneinfo.available_timezones())
        hint = (did_you_mean(value, zones) if close_match(value, zones)
                else "use an IANA name such as Europe/London, America/New_York or UTC")
        ck.add(location, where, f"unknown time zone '{value}'", hint)
        return INVALID
    return value


def _check_cron(ck: Checker, value: Any, location: Location, where: Where):
    if check_text(ck, value, location, where, 'cron: "30 2 * * *"') is INVALID:
        return INVALID
    fields = value.split()
    if len(fields) != 5:
        ck.add(location, where, f"invalid cron '{value}': expected 5 fields ({CRON_FIELDS}), got {len(fields)}",
               CRON_EXAMPLE)
        return INVALID
    from croniter import croniter

    try:
        croniter(value)
    except (ValueError, KeyError, TypeError) as exc:
        culprit = _bad_cron_field(fields)
        if culprit is not None:
            name, text = culprit
            problem = "is out of range" if re.fullmatch(r"[0-9,*/-]+", text) else "is not valid"
            ck.add(location, where, f"invalid cron '{value}': the {name} field '{text}' {problem}",
                   f"the {name} is {CRON_RANGES[name]}; {CRON_EXAMPLE}")
        else:
            reason = str(exc).replace(f"[{value}] ", "")
            ck.add(location, where, f"invalid cron '{value}': {reason}", CRON_EXAMPLE)
        return INVALID
    return value


def _bad_cron_field(fields: list[str]) -> tuple[str, str] | None:
    """The first field croniter refuses on its own (the others set to '*'): its name and text."""
    from croniter import croniter

    for index, (name, text) in enumerate(zip(CRON_FIELDS.split(), fields, strict=True)):
        alone = ["*"] * 5
        alone[index] = text
        try:
            croniter(" ".join(alone))
        except (ValueError, KeyError, TypeError):
            return name, text
    return None


def _check_schedule(ck: Checker, value: Any, location: Location, where: Where, pipeline_timezone):
    """A cron string (in the pipeline's time zone, else UTC) or {cron, timezone, catchup}."""
    timezone = pipeline_timezone if isinstance(pipeline_timezone, str) else "UTC"
    if isinstance(value, str):
        cron = _check_cron(ck, value, location, where)
        return INVALID if cron is INVALID else Schedule(cron=cron, timezone=timezone)
    if not isinstance(value, Mapping):
        ck.add(location, where, f"expected a cron string or a mapping, got {kind(value)}",
               'e.g. schedule: "30 2 * * *" or schedule: {cron: "30 2 * * *", timezone: Europe/London}')
        return INVALID
    ck.unknown_keys(value, SCHEDULE_FIELDS, where)
    if "cron" not in value:
        ck.add(value.location, where, "missing 'cron'", CRON_EXAMPLE)
        return INVALID
    cron = _check_cron(ck, value["cron"], value.value_location("cron"), (*where, "cron"))
    if "timezone" in value:
        if pipeline_timezone is not None:
            ck.add(value.key_location("timezone"), (*where, "timezone"),
                   "time zone set both here and on the pipeline", "keep one of them")
        timezone = _check_timezone(ck, value["timezone"], value.value_location("timezone"), (*where, "timezone"))
    catchup = value.get("catchup", "latest")
    if catchup not in CATCHUP_POLICIES:
        ck.add(value.value_location("catchup"), (*where, "catchup"), f"unknown catchup policy '{catchup}'",
               "use latest, all or none: latest runs once for the last missed time, all runs every missed"
               " time, none skips them")
        catchup = INVALID
    if INVALID in (cron, timezone, catchup):
        return INVALID
    return Schedule(cron=cron, timezone=timezone, catchup=catchup)


DEADLINE_EXAMPLE = 'e.g. deadline: "06:00" or deadline: {time: "06:00", timezone: Europe/London}'


def _check_deadline(ck: Checker, value: Any, location: Location, where: Where, pipeline_timezone):
    """A wall-clock time "HH:MM" (in the pipeline's time zone, else UTC) or {time, timezone}."""
    timezone = pipeline_timezone if isinstance(pipeline_timezone, str) else "UTC"
    if isinstance(value, Mapping):
        ck.unknown_keys(value, DEADLINE_FIELDS, where)
        if "time" not in value:
            ck.add(value.location, where, "missing 'time'", DEADLINE_EXAMPLE)
            return INVALID
        if "timezone" in value:
            if pipeline_timezone is not None:
                ck.add(value.key_location("timezone"), (*where, "timezone"),
                       "time zone set both here and on the pipeline", "keep one of them")
            timezone = _check_timezone(ck, value["timezone"], value.value_location("timezone"), (*where, "timezone"))
        value, location, where = value["time"], value.value_location("time"), (*where, "time")
    time = _check_clock_time(ck, value, location, where)
    if INVALID in (time, timezone):
        return INVALID
    return Deadline(time=time, timezone=timezone)


def _check_clock_time(ck: Checker, value: Any, location: Location, where: Where):
    import re

    text = value if isinstance(value, str) else None
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip()) if text else None
    if match is None:
        shown = f"'{value}'" if isinstance(value, str) else kind(value)
        hint = DEADLINE_EXAMPLE
        if isinstance(value, int):  # YAML reads an unquoted 06:00 as sexagesimal 360
            hint = 'quote it: deadline: "06:00" (YAML reads an unquoted 06:00 as a number)'
        ck.add(location, where, f"expected a time of day HH:MM (00:00 to 23:59), got {shown}", hint)
        return INVALID
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _check_events(ck: Checker, value: Any, location: Location, where: Where):
    if isinstance(value, str) and value.strip():
        return (value,)
    items = check_string_list(ck, value, location, where, "on_event: orders.landed", "event types", "an event type")
    return INVALID if items is INVALID else tuple(event for event, _ in items)
