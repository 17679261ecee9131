"""Whole problems, exactly as `tower validate` prints them (line:column: where: what (hint)), for the
mistakes test_errors.py checks only in part: the catalog as a whole, sections and entries of the
wrong kind, platform types and settings, the platform a service names, defaults, each platform's
service fields, dependencies. The text is the
product here: a person reads it to fix the catalog. Each case also shows what is NOT reported (no
cascade from one mistake). Written against the mutants of tower/catalog/validate.py that the
substring checks let survive (see tests/MUTATION.md)."""

from pathlib import Path

import pytest

from tower.catalog import load_catalog

CASES = {
    'platforms-not-a-mapping': ("""
platforms: [sim]
services:
  a: {platform: sim}
""", [
        '1:12: platforms: expected a mapping, got a list (write it as platforms: {lake: {type: databricks, ...}})',
        "3:17: service 'a' field 'platform': unknown platform 'sim' (declare it first, e.g. platforms: {sim: {type: sim}})",
    ]),
    'services-not-a-mapping': ("""
platforms:
  sim: {type: sim}
services: [a]
""", [
        '3:11: services: expected a mapping, got a list (write it as services: {load_orders: {platform: ...}})',
    ]),
    'a-platform-that-is-not-a-mapping-keeps-its-name': ("""
platforms:
  sim: 5
services:
  a: {platform: sim}
""", [
        "2:8: platform 'sim': expected a mapping, got a number (write it as {type: sim})",
    ]),
    'a-service-that-is-not-a-mapping-keeps-its-name': ("""
platforms:
  sim: {type: sim}
services:
  a: 5
  b: {platform: sim, depends_on: [a]}
""", [
        "4:6: service 'a': expected a mapping, got a number (write it as {platform: warehouse, sql: ...})",
    ]),
    'platform-type-missing-or-unknown': ("""
platforms:
  p: {max_concurrency: 2}
  q: {type: snowflak}
services:
  a: {platform: p, sql: select 1}
""", [
        "2:3: platform 'p': missing 'type' (add type: one of databricks, snowflake, http, command, sim)",
        "3:13: platform 'q' field 'type': unknown platform type 'snowflak' (did you mean 'snowflake'?)",
    ]),
    'http-platform-settings': ("""
platforms:
  api:
    type: http
    base_url: ftp://example.net
    headers: [Accept]
    auth: {client_id: abc, scope: x}
    max_concurrency: 0
    timeout: -1
services:
  a: {platform: api, path: /run}
""", [
        "4:15: platform 'api' field 'base_url': expected an http:// or https:// URL (e.g. https://api.example.com)",
        "5:14: platform 'api' field 'headers': expected a mapping, got a list (write it as {Accept: application/json})",
        "6:11: platform 'api' field 'auth': missing 'audience' (the app id URI of the service, e.g. api://refinery)",
        "6:28: platform 'api' field 'auth': unknown field 'scope' (known fields: audience, client_id)",
        "7:22: platform 'api' field 'max_concurrency': must be >= 1, got 0 (e.g. max_concurrency: 4)",
        "8:14: platform 'api' field 'timeout': expected a number >= 0, got a number (e.g. timeout: 30)",
    ]),
    'http-auth-not-a-mapping': ("""
platforms:
  api: {type: http, base_url: "https://x.example.net", auth: managed_identity}
services:
  a: {platform: api, path: /run}
""", [
        "2:62: platform 'api' field 'auth': expected a mapping, got a string (write it as auth: {audience: api://refinery-api})",
    ]),
    'snowflake-and-databricks-settings': ("""
platforms:
  wh:
    type: snowflake
    account: [acme]
    port: "5439x"
    password: ${SNOWFLAKE_PASSWORD}
  lake: {type: databricks, host: "https://adb.example.net", auth: token}
services:
  a: {platform: wh, sql: select 1}
  b: {platform: lake, job_id: 7}
""", [
        "2:3: platform 'wh': missing 'user', which snowflake platforms need (add user: ${SNOWFLAKE_USER})",
        "4:14: platform 'wh' field 'account': expected a string, got a list (e.g. account: ${ACCOUNT})",
        "5:11: platform 'wh' field 'port': expected a number >= 0, got a string (e.g. port: 30)",
        "7:67: platform 'lake' field 'auth': unknown auth 'token' (write auth: managed_identity, or use a token)",
    ]),
    'service-platform-missing': ("""
platforms:
  sim: {type: sim}
  wh: {type: snowflake, account: acme, user: tower, password: ${SNOWFLAKE_PASSWORD}}
services:
  a: {}
""", [
        "3:64: YAML: did not find expected ',' or '}' while parsing a flow mapping (fix the YAML syntax (indentation, quotes, brackets))",
    ]),
    'no-platform-declared': ("""
services:
  a: {}
""", [
        "2:3: service 'a': missing 'platform' (declare a platform first)",
    ]),
    'service-platform-wrong': ("""
platforms:
  sim: {type: sim}
services:
  a: {platform: simm}
  b: {platform: 5}
  c: {platform: databricks, job_id: 1}
""", [
        "4:17: service 'a' field 'platform': unknown platform 'simm' (did you mean 'sim'?)",
        "5:17: service 'b' field 'platform': expected a string, got a number (e.g. platform: warehouse)",
        "6:17: service 'c' field 'platform': unknown platform 'databricks' (declare it first, e.g. platforms: {databricks: {type: databricks}})",
    ]),
    'defaults-not-a-mapping': ("""
platforms:
  sim: {type: sim}
defaults: [timeout]
services:
  a: {platform: sim}
""", [
        '3:11: defaults: expected a mapping, got a list (write it as defaults: {timeout: 2h, retries: 1})',
    ]),
    'defaults-fields': ("""
platforms:
  sim: {type: sim}
defaults:
  platform: nope
  depends_on: [a]
  duration: 1s
services:
  a: {}
""", [
        "4:13: defaults field 'platform': unknown platform 'nope' (declared platforms: sim)",
        "5:3: defaults: unknown field 'depends_on' ('depends_on' differs per service: set it on each service)",
        "6:3: defaults: unknown field 'duration' (did you mean 'expected_duration'?)",
    ]),
    'command-run': ("""
platforms:
  cmd: {type: command}
services:
  a: {platform: cmd, run: 5}
  b: {platform: cmd, run: []}
  c: {platform: cmd}
""", [
        "4:27: service 'a' field 'run': expected a command string or a non-empty list of arguments, got a number (e.g. run: python etl.py  or  run: [python, etl.py])",
        "5:27: service 'b' field 'run': expected a command string or a non-empty list of arguments, got a list (e.g. run: python etl.py  or  run: [python, etl.py])",
        "6:3: service 'c': missing 'run', which command services need (add run: python etl.py)",
    ]),
    'depends-on': ("""
platforms:
  sim: {type: sim}
services:
  a: {platform: sim, depends_on: [a]}
  b: {platform: sim, depends_on: 5}
""", [
        "4:35: service 'a' field 'depends_on': 'a' depends on itself (remove it from its own depends_on)",
        "5:34: service 'b' field 'depends_on': expected a list of services, got a number (write it as depends_on: [ingest_orders])",
    ]),
    'the-catalog-as-a-whole': ("""
platforms:
  sim: {type: sim}
pipelines: [p]
extra: 1
""", [
        "1:1: catalog: no 'services' declared (a catalog declares its services; see examples/refinery/catalog.yaml)",
        "3:12: pipelines: expected a mapping, got a list (write it as pipelines: {nightly: {schedule: '30 2 * * *'}})",
        "4:1: catalog: unknown field 'extra' (known fields: platforms, services, pipelines, defaults)",
    ]),
    'empty-catalog': ("""
# nothing here yet
""", [
        '1:1: catalog: the catalog is empty (declare platforms, services and pipelines; see examples/refinery/catalog.yaml)',
    ]),
    'a-list-at-the-top': ("""
- a
""", [
        '1:1: catalog: expected a mapping at the top, got a list (write the keys platforms, services, pipelines, defaults at the top level; see examples/refinery/catalog.yaml)',
    ]),
    'http-service-fields': ("""
platforms:
  api: {type: http, base_url: "https://x.example.net"}
services:
  a: {platform: api, path: [x], status_path: 5, success_values: 5, headers: [h], method: FETCH}
  b: {platform: api, url: 5}
  c: {platform: api, url: ftp://x}
  d: {platform: api, path: /a, url: "https://x.example.net/b"}
""", [
        "4:28: service 'a' field 'path': expected a string, got a list (e.g. path: /jobs/refresh)",
        "4:46: service 'a' field 'status_path': expected a string, got a number (e.g. status_path: status)",
        "4:65: service 'a' field 'success_values': expected a list of strings, got a number (write it as success_values: [a, b])",
        "4:77: service 'a' field 'headers': expected a mapping, got a list (write it as {X-Request-Source: tower})",
        "4:90: service 'a' field 'method': unknown HTTP method 'FETCH' (did you mean 'PATCH'?)",
        "5:27: service 'b' field 'url': expected a string, got a number (e.g. url: https://api.example.com/refresh)",
        "6:27: service 'c' field 'url': expected an http:// or https:// URL (e.g. https://api.example.com)",
        "7:32: service 'd': both 'path' and 'url' are set (keep one: a path, joined to the platform's base_url, or a full url)",
    ]),
    'other-service-fields': ("""
platforms:
  sim: {type: sim}
  wh: {type: snowflake, account: acme, user: tower, password: "${SNOWFLAKE_PASSWORD}"}
  lake: {type: databricks, host: "https://adb.example.net"}
  cmd: {type: command}
services:
  a: {platform: sim, fail_attempts: -1, outcome: explode}
  b: {platform: wh, sql: [select], bind: day}
  c: {platform: lake, job_id: 0}
  d: {platform: cmd, run: ls, cwd: 5, env: [A]}
""", [
        "7:37: service 'a' field 'fail_attempts': must be >= 0, got -1 (e.g. fail_attempts: 1)",
        "7:50: service 'a' field 'outcome': unknown outcome 'explode' (use one of: succeed, fail)",
        "8:26: service 'b' field 'sql': expected a string, got a list (e.g. sql: CALL refresh_orders())",
        "8:42: service 'b' field 'bind': expected a list of strings, got a string (write it as bind: [a, b])",
        "9:31: service 'c' field 'job_id': must be >= 1, got 0 (e.g. job_id: 123456)",
        "10:36: service 'd' field 'cwd': expected a string, got a number (e.g. cwd: ./work)",
        "10:44: service 'd' field 'env': expected a mapping, got a list (write it as {X-Request-Source: tower})",
    ]),
    'later-entries-are-still-checked': ("""
platforms:
  broken: 5
  my platform: {type: sim}
  api: {type: http, base_url: "https://x.example.net", host: h, max_retries: -1}
services:
  a: 5
  b: {platform: api, path: /b, success_values: [ok, [x]]}
  c: {platform: wh2, sql: ""}
""", [
        "2:11: platform 'broken': expected a mapping, got a number (write it as {type: sim})",
        "3:3: platform 'my platform': invalid name 'my platform' (use letters, digits, '_', '-' and '.')",
        "4:56: platform 'api': unknown field 'host' ('host' is a databricks / snowflake setting; this one is http)",
        "4:78: platform 'api' field 'max_retries': expected a number >= 0, got a number (e.g. max_retries: 30)",
        "6:6: service 'a': expected a mapping, got a number (write it as {platform: warehouse, sql: ...})",
        "7:53: service 'b' field 'success_values[1]': expected a string, got a list (write it as success_values: [a, b])",
        "8:17: service 'c' field 'platform': unknown platform 'wh2' (declared platforms: broken, my platform, api)",
    ]),
    'empty-required-field': ("""
platforms:
  wh: {type: snowflake, account: acme, user: tower, password: "${SNOWFLAKE_PASSWORD}"}
services:
  a: {platform: wh, sql: ""}
""", [
        "4:3: service 'a': missing 'sql', which snowflake services need (add sql: CALL refresh_orders())",
        "4:26: service 'a' field 'sql': is empty (e.g. sql: CALL refresh_orders(), or remove the field)",
    ]),
    'unknown-service-field': ("""
platforms:
  sim: {type: sim}
services:
  a: {platform: sim, timout: 5m}
""", [
        "4:22: service 'a': unknown field 'timout' (did you mean 'timeout'?)",
    ]),
    'env-syntax-in-a-list': ("""
platforms:
  api: {type: http, base_url: "https://x.example.net"}
services:
  a: {platform: api, path: /a, success_values: ["${BROKEN"]}
""", [
        "4:48: service 'a' field 'success_values[0]': unclosed '${' at character 1: write ${NAME} or ${NAME:-default} (fix the reference, or write $${ for a literal ${)",
    ]),
    'a-default-that-belongs-to-no-service': ("""
platforms:
  sim: {type: sim}
defaults:
  zzzz: 1
services:
  a: {platform: sim}
""", [
        "4:3: defaults: unknown field 'zzzz' (known fields: platform, timeout, retries, expected_duration, tags, params)",
    ]),
    'a-secret-header-written-literally': ("""
platforms:
  api: {type: http, base_url: "https://x.example.net"}
services:
  call-api: {platform: api, path: /a, headers: {Authorization: Bearer abc}}
""", [
        "4:64: service 'call-api' field 'headers.Authorization': a secret is written literally in the catalog (secrets never live in the catalog: put it in an environment variable and write ${CALL_API_AUTHORIZATION})",
    ]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_whole_problem_list(name, problems):
    text, expected = CASES[name]
    found = problems(text)
    assert [str(p).removeprefix(f"{p.path}:") for p in found] == expected
    assert {Path(p.path).name for p in found} == {"catalog.yaml"}  # every problem names the file


def test_valid_service_fields_are_normalised_into_the_spec(write):
    catalog = load_catalog(write("""
        platforms:
          cmd: {type: command}
          api: {type: http, base_url: "https://x.example.net"}
          wh: {type: snowflake, account: acme, user: tower, password: "${SNOWFLAKE_PASSWORD}", role: 7}
          lake: {type: databricks, host: "https://adb.example.net", max_concurrency: 3, retry_timeout: 0}
          sim: {type: sim}
        services:
          run: {platform: cmd, run: [python, 1], cwd: /tmp, env: {A: b}}
          call: {platform: api, path: /jobs, method: post, success_values: [ok, done], headers: {X: y}}
          load: {platform: wh, sql: "insert into t values (?)", bind: [day], params: {day: "2024-01-01"}}
          job: {platform: lake, job_id: "12", job_parameters: {day: x}}
          job2: {platform: lake, job_id: "${LAKE_JOB}"}
          fake: {platform: sim, duration: 2s, fail_attempts: 1, outcome: fail}
        """))
    assert {name: service.spec for name, service in catalog.services.items()} == {
        "run": {"run": ["python", "1"], "cwd": "/tmp", "env": {"A": "b"}},
        "call": {"path": "/jobs", "method": "POST", "success_values": ["ok", "done"], "headers": {"X": "y"}},
        "load": {"sql": "insert into t values (?)", "bind": ["day"]},
        "job": {"job_id": 12, "job_parameters": {"day": "x"}},
        "job2": {"job_id": "${LAKE_JOB}"},
        "fake": {"duration": 2.0, "fail_attempts": 1, "outcome": "fail"},
    }
    assert catalog.services["fake"].expected_duration == 2.0  # a simulated service takes what it says
    assert [service.name for service in catalog.services.values()] == list(catalog.services)
    assert {name: (p.name, p.type, p.max_concurrency) for name, p in catalog.platforms.items()} == {
        "cmd": ("cmd", "command", None), "api": ("api", "http", None), "wh": ("wh", "snowflake", None),
        "lake": ("lake", "databricks", 3), "sim": ("sim", "sim", None)}
    assert catalog.platforms["wh"].settings["role"] == 7 and catalog.platforms["lake"].settings["retry_timeout"] == 0
    assert Path(catalog.path).name == "catalog.yaml"


def test_job_parameters_of_the_wrong_kind_are_reported_at_the_field(problems):
    found = problems("""
        platforms:
          lake: {type: databricks, host: "https://adb.example.net"}
        services:
          a: {platform: lake, job_id: 1, job_parameters: [x]}
        """)
    assert [(p.line, p.column, p.where, p.what) for p in found] == [
        (4, 50, "service 'a' field 'job_parameters'", "expected a mapping, got a list")]


def test_a_field_no_platform_type_has_lists_the_known_fields(problems):
    from tower.catalog.fields import SERVICE_COMMON, SERVICE_FIELDS

    [problem] = problems("platforms:\n  sim: {type: sim}\nservices:\n  a: {platform: sim, zzzz: 1}\n")
    assert (problem.line, problem.where, problem.what) == (4, "service 'a'", "unknown field 'zzzz'")
    assert problem.hint == "known fields: " + ", ".join(SERVICE_COMMON + SERVICE_FIELDS["sim"])
