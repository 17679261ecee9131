"""Turn located YAML data into a ``Catalog``, or a ``CatalogError`` listing every problem at once.

Order of work: top level, platforms, defaults, services (their fields depend on their platform's
type), then what needs the whole graph: unknown dependencies, cycles, pipeline selectors.
"""

from __future__ import annotations

from typing import Any

from tower import graph
from tower.catalog.checks import (
    INVALID,
    Checker,
    Where,
    check_duration,
    check_env_syntax,
    check_int,
    check_name,
    check_params,
    check_retries,
    check_settings_secrets,
    check_string_list,
    check_string_map,
    check_tags,
    check_text,
    close_match,
    did_you_mean,
    kind,
)
from tower.catalog.fields import (
    DEFAULTS_FIELDS,
    HTTP_METHODS,
    NUMBER_SETTINGS,
    PLATFORM_COMMON,
    PLATFORM_FIELDS,
    PLATFORM_REQUIRED,
    SERVICE_COMMON,
    SERVICE_FIELDS,
    SERVICE_REQUIRED,
    SIM_OUTCOMES,
    TOP_LEVEL,
)
from tower.catalog.model import PLATFORM_TYPES, Catalog, Location, Pipeline, Platform, RetryPolicy, Service
from tower.catalog.pipelines import check_graph, check_pipelines
from tower.catalog.sql import shape as sql_shape
from tower.catalog.yamlsource import Mapping, Sequence, plain
from tower.errors import CatalogError, Problem

EXAMPLE = "see examples/refinery/catalog.yaml"

# What to write when a required field is missing.
_EXAMPLES = {
    "host": "host: ${DATABRICKS_HOST}",
    "account": "account: ${SNOWFLAKE_ACCOUNT}",
    "user": "user: ${SNOWFLAKE_USER}",
    "password": "password: ${SNOWFLAKE_PASSWORD}",
    "base_url": "base_url: ${API_BASE_URL:-http://127.0.0.1:8080}",
    "job_id": "job_id: 123456",
    "sql": "sql: CALL refresh_orders()",
    "path": "path: /jobs/refresh",
    "run": "run: python etl.py",
}


def build_catalog(data: Any, path: str) -> Catalog:
    """The validated catalog; CatalogError with every problem when there is any."""
    ck = Checker(path)
    start = Location(path, 1, 1)
    if data is None:
        raise CatalogError([Problem(path, 1, 1, "catalog", "the catalog is empty",
                                    f"declare platforms, services and pipelines; {EXAMPLE}")])
    if not isinstance(data, Mapping):
        raise CatalogError([Problem(path, 1, 1, "catalog", f"expected a mapping at the top, got {kind(data)}",
                                    f"write the keys {', '.join(TOP_LEVEL)} at the top level; {EXAMPLE}")])
    ck.unknown_keys(data, TOP_LEVEL, ())
    if "services" not in data:
        ck.add(start, (), "no 'services' declared", f"a catalog declares its services; {EXAMPLE}")

    platforms = _check_platforms(ck, data.get("platforms"), data.value_location("platforms"))
    types = {name: platform.type for name, platform in platforms.items()}
    defaults = _check_defaults(ck, data.get("defaults"), data.value_location("defaults"), types)
    services, dep_locations = _check_services(ck, data.get("services"), data.value_location("services"),
                                              types, defaults)
    check_graph(ck, services, dep_locations)
    pipelines = check_pipelines(ck, data.get("pipelines"), data.value_location("pipelines"), services)
    check_binds(ck, data.get("services"), services, pipelines)
    if ck.problems:
        raise CatalogError(ck.problems)
    return Catalog(path=path, platforms=platforms, services=services, pipelines=pipelines)


def _all_fields(table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Every field of every type, in table order: what to accept when the type is unknown."""
    return tuple(dict.fromkeys(field for fields in table.values() for field in fields))


def _explain_other_type(key: str, own_type: str | None, table: dict[str, tuple[str, ...]], noun: str):
    owners = [t for t, fields in table.items() if key in fields and t != own_type]
    if owners and own_type:
        return f"'{key}' is a {' / '.join(owners)} {noun}; this one is {own_type}"
    return None


# --- platforms ---------------------------------------------------------------------------------


def _check_platforms(ck: Checker, section: Any, location: Location) -> dict[str, Platform]:
    section = ck.mapping(section, location, ("platforms",), "platforms: {lake: {type: databricks, ...}}")
    platforms: dict[str, Platform] = {}
    for name, raw in (section or {}).items():
        where = ("platforms", name)
        key_location = section.key_location(name)
        check_name(ck, name, key_location, where)
        raw = ck.mapping(raw, section.value_location(name), where, "{type: sim}")
        if raw is None:  # reported; keep the name so its services are not reported too
            platforms[name] = Platform(name, "", location=key_location)
            continue
        ptype = _check_platform_type(ck, raw, key_location, where)
        fields = PLATFORM_FIELDS.get(ptype) or _all_fields(PLATFORM_FIELDS)
        ck.unknown_keys(raw, PLATFORM_COMMON + fields, where,
                        lambda key, t=ptype: _explain_other_type(key, t, PLATFORM_FIELDS, "setting"))
        limit = None
        if raw.get("max_concurrency") is not None:
            limit = check_int(ck, raw["max_concurrency"], raw.value_location("max_concurrency"),
                              (*where, "max_concurrency"), 1, "max_concurrency: 4")
        settings = {key: value for key, value in raw.items() if key not in PLATFORM_COMMON}
        for key, value in settings.items():
            if key in fields:  # unknown ones were reported above
                _check_setting(ck, ptype, key, value, raw.value_location(key), (*where, key))
        if ptype:
            _check_required(ck, raw, PLATFORM_REQUIRED[ptype], key_location, where, f"{ptype} platforms")
        check_settings_secrets(ck, raw, where, name)
        platforms[name] = Platform(name, ptype or "", None if limit is INVALID else limit,
                                   plain(settings), key_location)
    return platforms


def _check_platform_type(ck: Checker, raw: Mapping, key_location: Location, where: Where) -> str | None:
    if "type" not in raw:
        ck.add(key_location, where, "missing 'type'", f"add type: one of {', '.join(PLATFORM_TYPES)}")
        return None
    ptype = raw["type"]
    if ptype not in PLATFORM_TYPES:
        ck.add(raw.value_location("type"), (*where, "type"), f"unknown platform type '{ptype}'",
               did_you_mean(str(ptype), PLATFORM_TYPES))
        return None
    return ptype


def _check_setting(ck: Checker, ptype: str | None, key: str, value: Any, location: Location, where: Where) -> None:
    if key in ("headers", "env"):
        check_string_map(ck, value, location, where, "{Accept: application/json}")
    elif key == "auth" and ptype == "http":
        auth = ck.mapping(value, location, where, "auth: {audience: api://refinery-api}")
        if auth is not None:
            ck.unknown_keys(auth, ("audience", "client_id"), where)
            if not auth.get("audience"):
                ck.add(location, where, "missing 'audience'", "the app id URI of the service, e.g. api://refinery")
    elif key == "auth":
        if value != "managed_identity":
            ck.add(location, where, f"unknown auth '{value}'", "write auth: managed_identity, or use a token")
    elif key in NUMBER_SETTINGS and not (isinstance(value, str) and "${" in value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            ck.add(location, where, f"expected a number >= 0, got {kind(value)}", f"e.g. {key}: 30")
    elif check_text(ck, value, location, where, f"{key}: ${{{key.upper()}}}", numbers=True) is INVALID:
        return
    if check_env_syntax(ck, value, location, where) and key in ("base_url", "url"):
        _check_url(ck, value, location, where)


def _check_url(ck: Checker, value: Any, location: Location, where: Where) -> None:
    if isinstance(value, str) and "${" not in value and not value.startswith(("http://", "https://")):
        ck.add(location, where, "expected an http:// or https:// URL", "e.g. https://api.example.com")


def _check_required(ck: Checker, raw: Mapping, groups, location: Location, where: Where, what: str) -> None:
    for group in groups:
        if not any(raw.get(field) not in (None, "") for field in group):
            names = " or ".join(f"'{field}'" for field in group)
            ck.add(location, where, f"missing {names}, which {what} need",
                   f"add {_EXAMPLES.get(group[0], group[0] + ': ...')}")


# --- defaults and services ---------------------------------------------------------------------


def _check_common(ck: Checker, field: str, value: Any, location: Location, where: Where):
    """The fields services and defaults share; returns the normalised value or INVALID."""
    if field == "timeout":
        return check_duration(ck, value, location, where, positive=True)
    if field == "expected_duration":
        return check_duration(ck, value, location, where)
    if field == "retries":
        return check_retries(ck, value, location, where)
    if field == "tags":
        return check_tags(ck, value, location, where)
    if field == "params":
        return check_params(ck, value, location, where)
    raise AssertionError(field)


def _check_platform_ref(ck: Checker, value: Any, location: Location, where: Where, types: dict) -> Any:
    if check_text(ck, value, location, where, "platform: warehouse") is INVALID:
        return INVALID
    if value not in types:
        if value in PLATFORM_TYPES and not close_match(value, types):
            hint = f"declare it first, e.g. platforms: {{{value}: {{type: {value}}}}}"
        else:
            hint = did_you_mean(value, types, "declared platforms")
        ck.add(location, where, f"unknown platform '{value}'", hint)
        return INVALID
    return value


def _check_defaults(ck: Checker, section: Any, location: Location, types: dict) -> dict[str, Any]:
    where = ("defaults",)
    section = ck.mapping(section, location, where, "defaults: {timeout: 2h, retries: 1}")
    if not section:
        return {}
    ck.unknown_keys(section, DEFAULTS_FIELDS, where,
                    lambda key: f"'{key}' differs per service: set it on each service" if key in SERVICE_COMMON
                    or any(key in f for f in SERVICE_FIELDS.values()) else None)
    defaults = {}
    for field in DEFAULTS_FIELDS:
        if field in section:
            location, here = section.value_location(field), (*where, field)
            if field == "platform":
                defaults[field] = _check_platform_ref(ck, section[field], location, here, types)
            else:
                defaults[field] = _check_common(ck, field, section[field], location, here)
    return defaults  # INVALID values stay: a service need not report a field its defaults got wrong


def _check_services(ck: Checker, section: Any, location: Location, types: dict, defaults: dict):
    """Every service, plus where each dependency was written (for the graph checks)."""
    section = ck.mapping(section, location, ("services",), "services: {load_orders: {platform: ...}}")
    services: dict[str, Service] = {}
    dep_locations: dict[str, dict[str, Location]] = {}
    for name, raw in (section or {}).items():
        where = ("services", name)
        key_location = section.key_location(name)
        check_name(ck, name, key_location, where)
        raw = ck.mapping(raw, section.value_location(name), where, "{platform: warehouse, sql: ...}")
        if raw is None:  # reported; keep the name so services depending on it are not reported too
            services[name] = Service(name, "", location=key_location)
            continue
        service, dep_locations[name] = _check_service(ck, name, raw, key_location, types, defaults)
        services[name] = service
    return services, dep_locations


def _check_service(ck: Checker, name: str, raw: Mapping, key_location: Location, types: dict,
                   defaults: dict) -> tuple[Service, dict[str, Location]]:
    where = ("services", name)
    platform = defaults.get("platform", INVALID)
    if "platform" in raw:
        platform = _check_platform_ref(ck, raw["platform"], raw.value_location("platform"),
                                       (*where, "platform"), types)
    elif "platform" not in defaults:
        ck.add(key_location, where, "missing 'platform'",
               f"add platform: NAME (declared: {', '.join(types)})" if types else "declare a platform first")
    ptype = types.get(platform) or None

    own_fields = SERVICE_FIELDS.get(ptype) or _all_fields(SERVICE_FIELDS)
    ck.unknown_keys(raw, SERVICE_COMMON + own_fields, where,
                    lambda key: _explain_other_type(key, ptype, SERVICE_FIELDS, "field"))

    common = {field: value for field, value in defaults.items() if field != "platform"}
    for field in ("timeout", "expected_duration", "retries", "tags", "params"):
        if field in raw:
            value = _check_common(ck, field, raw[field], raw.value_location(field), (*where, field))
            if field == "params" and value is not INVALID and isinstance(defaults.get("params"), dict):
                value = {**defaults["params"], **value}
            common[field] = value

    deps: dict[str, Location] = {}
    if "depends_on" in raw:
        items = check_string_list(ck, raw["depends_on"], raw.value_location("depends_on"),
                                  (*where, "depends_on"), "depends_on: [ingest_orders]", "services")
        deps = {} if items is INVALID else dict(items)
    if name in deps:
        ck.add(deps.pop(name), (*where, "depends_on"), f"'{name}' depends on itself",
               "remove it from its own depends_on")

    spec = {key: value for key, value in raw.items() if key not in SERVICE_COMMON}
    if ptype:
        _check_required(ck, raw, SERVICE_REQUIRED[ptype], key_location, where, f"{ptype} services")
        spec = _check_spec(ck, ptype, spec, raw, where)
    check_settings_secrets(ck, raw, where, name)

    expected = common.get("expected_duration")
    if expected is None and ptype == "sim" and isinstance(spec.get("duration"), float):
        expected = spec["duration"]  # a simulated service takes what it says
    service = Service(
        name=name,
        platform=platform if isinstance(platform, str) else "",
        depends_on=tuple(deps),
        timeout=_valid(common.get("timeout")),
        retry=_valid(common.get("retries")) or RetryPolicy(),
        expected_duration=_valid(expected),
        tags=_valid(common.get("tags")) or (),
        params=_valid(common.get("params")) or {},
        spec=plain(spec),
        location=key_location,
    )
    return service, deps


def _valid(value: Any) -> Any:
    return None if value is INVALID else value


def _check_spec(ck: Checker, ptype: str, spec: dict, raw: Mapping, where: Where) -> dict:
    """The platform's own service fields, normalised (durations in seconds, method upper-case)."""
    result = {}
    for field, value in spec.items():
        location, here = raw.value_location(field), (*where, field)
        checked = _check_spec_field(ck, ptype, field, value, location, here)
        if checked is not INVALID:
            check_env_syntax(ck, checked, location, here)
        result[field] = value if checked is INVALID else checked
    if ptype == "snowflake" and isinstance(result.get("sql"), str):
        _check_sql(ck, result["sql"], result.get("bind"), raw, where)
    if ptype == "http" and "path" in spec and "url" in spec:
        ck.add(raw.key_location("url"), where, "both 'path' and 'url' are set",
               "keep one: a path, joined to the platform's base_url, or a full url")
    return result


def _check_sql(ck: Checker, sql: str, bind: Any, raw: Mapping, where: Where) -> None:
    """One statement, ``?`` placeholders only, as many as ``bind`` names (see tower.catalog.sql)."""
    found = sql_shape(sql)
    location, here = raw.value_location("sql"), (*where, "sql")
    if not found.statements and sql.strip():  # an empty sql is reported as a missing field
        ck.add(location, here, "the SQL holds no statement (only ';', comments or blanks)",
               "write the one statement this service runs, e.g. sql: CALL refresh_orders()")
        return
    if found.statements > 1:
        ck.add(location, here, f"{found.statements} SQL statements in one service",
               "a snowflake service runs one statement: split them into services joined by depends_on,"
               " or call a stored procedure")
    if found.pyformat:
        ck.add(location, here, f"'{found.pyformat}' is not a placeholder Tower fills",
               "write ? in the SQL and name the run params that fill it in bind, e.g."
               " sql: CALL load_orders(?) with bind: [business_date]")
        return
    names = bind if isinstance(bind, list) else []
    if found.placeholders != len(names):
        what = (f"the SQL has {found.placeholders} '?' placeholder{'s' if found.placeholders != 1 else ''}"
                f" but bind names {len(names)} param{'s' if len(names) != 1 else ''}")
        at = raw.value_location("bind") if "bind" in raw else location
        ck.add(at, (*where, "bind") if "bind" in raw else here, what,
               "bind lists one run param per '?', in order")


def check_binds(ck: Checker, section: Any, services: dict[str, Service], pipelines: dict[str, Pipeline]) -> None:
    """Every param a ``bind`` names is declared, by the service (or defaults) or by every pipeline
    that runs it: else the run would fail at its submit, minutes in."""
    if not isinstance(section, Mapping):
        return
    deps = {name: svc.depends_on for name, svc in services.items()}
    tags = {name: svc.tags for name, svc in services.items()}
    runs_in: dict[str, list[Pipeline]] = {}
    for pipeline in pipelines.values():
        try:
            chosen = graph.select(pipeline.selectors, deps, tags)
        except ValueError:  # a cycle or a bad selector, reported already
            return
        for name in chosen:
            runs_in.setdefault(name, []).append(pipeline)
    for name, service in services.items():
        raw = section.get(name)
        bind = raw.get("bind") if isinstance(raw, Mapping) else None
        if not isinstance(bind, Sequence):
            continue
        runners = runs_in.get(name, [])
        for index, param in enumerate(bind):
            if not isinstance(param, str) or param in service.params:
                continue
            lacking = [p.name for p in runners if param not in p.params]
            if runners and not lacking:
                continue
            known = set(service.params).union(*(p.params for p in runners))
            if lacking:
                what = (f"bind names param '{param}', which the service does not declare, nor pipeline"
                        f"{'s' if len(lacking) > 1 else ''} {', '.join(map(repr, lacking))} that run"
                        f"{'s' if len(lacking) == 1 else ''} it")
            else:
                what = f"bind names param '{param}', which neither the service nor any pipeline declares"
            hint = did_you_mean(param, sorted(known)) if close_match(param, known) else (
                f"declare it with a default, e.g. params: {{{param}: '2026-11-24'}} on the service or its pipelines")
            ck.add(bind.item_location(index), ("services", name, "bind"), what, hint)


def _check_spec_field(ck: Checker, ptype: str, field: str, value: Any, location: Location, where: Where):
    if field not in SERVICE_FIELDS[ptype]:
        return INVALID  # already reported as an unknown field
    if field == "job_id":
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, str) and "${" in value:
            return value
        return check_int(ck, value, location, where, 1, "job_id: 123456")
    if field in ("sql", "path", "cwd"):
        return check_text(ck, value, location, where, _EXAMPLES.get(field, f"{field}: ./work"))
    if field == "url":
        if check_text(ck, value, location, where, "url: https://api.example.com/refresh") is INVALID:
            return INVALID
        _check_url(ck, value, location, where)
        return value
    if field in ("method", "cancel_method"):
        if not isinstance(value, str) or value.upper() not in HTTP_METHODS:
            ck.add(location, where, f"unknown HTTP method '{value}'", did_you_mean(str(value).upper(), HTTP_METHODS))
            return INVALID
        return value.upper()
    if field in ("status_path", "cancel_path"):
        return check_text(ck, value, location, where, f"{field}: status")
    if field in ("success_values", "failure_values", "cancelled_values", "bind"):
        items = check_string_list(ck, value, location, where, f"{field}: [a, b]", "strings", "a string")
        return INVALID if items is INVALID else [item for item, _ in items]
    if field == "job_parameters":
        return check_params(ck, value, location, where)
    if field in ("headers", "env"):
        return check_string_map(ck, value, location, where, "{X-Request-Source: tower}")
    if field == "body":
        return plain(value)
    if field == "run":
        return _check_run(ck, value, location, where)
    if field == "duration":
        return check_duration(ck, value, location, where)
    if field == "fail_attempts":
        return check_int(ck, value, location, where, 0, "fail_attempts: 1")
    if field == "jitter":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            ck.add(location, where, f"jitter must be a fraction from 0 to below 1, got {kind(value)} {value!r}",
                   "e.g. jitter: 0.02 (the work ends within +-2 % of its duration)")
            return INVALID
        return float(value)
    if field == "blind":
        if not isinstance(value, bool):
            ck.add(location, where, f"blind must be true or false, got {kind(value)} {value!r}", "e.g. blind: true")
            return INVALID
        return value
    if field == "outcome":
        if value not in SIM_OUTCOMES:
            ck.add(location, where, f"unknown outcome '{value}'", did_you_mean(str(value), SIM_OUTCOMES))
            return INVALID
        return value
    raise AssertionError(f"no check for service field {field!r}")


def _check_run(ck: Checker, value: Any, location: Location, where: Where):
    """A command line (run through a shell) or an argv list (run as is)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(arg, (str, int, float)) for arg in value):
        return [str(arg) for arg in value]
    ck.add(location, where, f"expected a command string or a non-empty list of arguments, got {kind(value)}",
           "e.g. run: python etl.py  or  run: [python, etl.py]")
    return INVALID
