"""One test per kind of catalog mistake: the message, the place (where) and the line."""

from dataclasses import dataclass

import pytest

# Lines 1-9 of most cases: two platforms and a valid service `a`; cases add from line 10 on.
HEAD = """
platforms:
  sim: {type: sim}
  wh:
    type: snowflake
    account: acme
    user: tower
    password: ${SNOWFLAKE_PASSWORD}
services:
  a: {platform: sim}
"""


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    line: int
    where: str
    message: str  # must appear in "what (hint)"


def with_head(text: str) -> str:
    return HEAD + text.strip("\n") + "\n"


CASES = [
    # --- YAML itself ---------------------------------------------------------------------------
    Case("yaml-syntax", "services:\n  a: [1, 2\n  b: 3\n", 3, "YAML",
         "did not find expected ',' or ']'"),
    Case("yaml-tab", "services:\n\ta: {platform: sim}\n", 2, "YAML", "indent with spaces, not tabs"),
    Case("yaml-unquoted-cron", "pipelines:\n  p:\n    schedule: * * * * *\n", 3, "YAML",
         "quote a value that starts with '*'"),
    Case("duplicate-key", with_head("""
  b: {platform: sim}
  a: {platform: sim}
"""), 11, "services", "duplicate key 'a' (first written at line 9)"),
    Case("duplicate-nested-key", with_head("""
  b:
    platform: sim
    timeout: 1m
    timeout: 2m
"""), 13, "service 'b'", "duplicate key 'timeout' (first written at line 12)"),
    # --- unknown keys ----------------------------------------------------------------------------
    Case("unknown-top-level", with_head("pipeline:\n  p: {}\n"), 10, "catalog",
         "unknown field 'pipeline' (did you mean 'pipelines'?)"),
    Case("unknown-platform-key", """
platforms:
  lake:
    type: databricks
    host: https://adb.example.net
    hots: x
services:
  a: {platform: lake, job_id: 1}
""", 5, "platform 'lake'", "unknown field 'hots' (did you mean 'host'?)"),
    Case("platform-key-of-other-type", """
platforms:
  lake:
    type: databricks
    host: https://adb.example.net
    warehouse: WH
services:
  a: {platform: lake, job_id: 1}
""", 5, "platform 'lake'", "'warehouse' is a snowflake setting; this one is databricks"),
    Case("unknown-service-key", with_head("  b:\n    platform: sim\n    timout: 5m\n"), 12,
         "service 'b'", "unknown field 'timout' (did you mean 'timeout'?)"),
    Case("service-key-of-other-type", with_head("  b:\n    platform: sim\n    sql: select 1\n"), 12,
         "service 'b'", "'sql' is a snowflake field; this one is sim"),
    Case("unknown-pipeline-key", with_head("pipelines:\n  p:\n    on_events: x\n"), 12,
         "pipeline 'p'", "unknown field 'on_events' (did you mean 'on_event'?)"),
    Case("unknown-defaults-key", with_head("defaults:\n  retires: 2\n"), 11,
         "defaults", "unknown field 'retires' (did you mean 'retries'?)"),
    Case("platform-field-in-defaults", with_head("defaults:\n  sql: select 1\n"), 11,
         "defaults", "'sql' differs per service: set it on each service"),
    # --- platforms -------------------------------------------------------------------------------
    Case("unknown-platform-type", """
platforms:
  lake:
    type: databrick
services: {}
""", 3, "platform 'lake' field 'type'", "unknown platform type 'databrick' (did you mean 'databricks'?)"),
    Case("platform-missing-type", "platforms:\n  lake: {host: x}\nservices: {}\n", 2, "platform 'lake'",
         "missing 'type'"),
    Case("databricks-missing-host", """
platforms:
  lake:
    type: databricks
    token: ${DATABRICKS_TOKEN}
services: {}
""", 2, "platform 'lake'", "missing 'host', which databricks platforms need (add host: ${DATABRICKS_HOST})"),
    Case("snowflake-missing-user", """
platforms:
  wh:
    type: snowflake
    account: acme
    password: ${PW}
services: {}
""", 2, "platform 'wh'", "missing 'user', which snowflake platforms need"),
    Case("snowflake-missing-credentials", """
platforms:
  wh:
    type: snowflake
    account: acme
    user: tower
services: {}
""", 2, "platform 'wh'", "missing 'password' or 'private_key', which snowflake platforms need"),
    Case("http-missing-base-url", "platforms:\n  api: {type: http}\nservices: {}\n", 2, "platform 'api'",
         "missing 'base_url', which http platforms need"),
    Case("http-base-url-scheme", "platforms:\n  api: {type: http, base_url: ftp://x}\nservices: {}\n", 2,
         "platform 'api' field 'base_url'", "expected an http:// or https:// URL"),
    Case("max-concurrency-zero", "platforms:\n  s:\n    type: sim\n    max_concurrency: 0\nservices: {}\n", 4,
         "platform 's' field 'max_concurrency'", "must be >= 1, got 0"),
    Case("max-concurrency-not-int", "platforms:\n  s:\n    type: sim\n    max_concurrency: two\nservices: {}\n",
         4, "platform 's' field 'max_concurrency'", "expected a whole number >= 1, got a string"),
    Case("number-setting", "platforms:\n  s: {type: sim, time_scale: fast}\nservices: {}\n", 2,
         "platform 's' field 'time_scale'", "expected a number >= 0, got a string"),
    Case("databricks-bad-auth", "platforms:\n  l: {type: databricks, host: h, auth: oauth}\nservices: {}\n", 2,
         "platform 'l' field 'auth'", "unknown auth 'oauth' (write auth: managed_identity, or use a token)"),
    Case("http-auth-without-audience", "platforms:\n  a: {type: http, base_url: http://x, auth: {client_id: c}}\n"
         "services: {}\n", 2, "platform 'a' field 'auth'", "missing 'audience'"),
    # --- services and dependencies ---------------------------------------------------------------
    Case("unknown-platform", with_head("  b: {platform: whh, sql: x}\n"), 10, "service 'b' field 'platform'",
         "unknown platform 'whh' (did you mean 'wh'?)"),
    Case("undeclared-platform-type", with_head("  b: {platform: databricks, job_id: 1}\n"), 10,
         "service 'b' field 'platform'",
         "unknown platform 'databricks' (declare it first, e.g. platforms: {databricks: {type: databricks}})"),
    Case("platform-type-near-a-declared-name",
         "platforms:\n  commands: {type: command}\nservices:\n  b: {platform: command, run: x}\n", 4,
         "service 'b' field 'platform'", "unknown platform 'command' (did you mean 'commands'?)"),
    Case("missing-platform", with_head("  b: {depends_on: [a]}\n"), 10, "service 'b'",
         "missing 'platform' (add platform: NAME (declared: sim, wh))"),
    Case("unknown-dependency", with_head("  load_orders: {platform: sim}\n  b:\n    platform: sim\n"
                                         "    depends_on: [a, load_ordres]\n"), 13,
         "service 'b' field 'depends_on'", "depends on unknown service 'load_ordres' (did you mean 'load_orders'?)"),
    Case("self-dependency", with_head("  b:\n    platform: sim\n    depends_on:\n      - a\n      - b\n"), 14,
         "service 'b' field 'depends_on'", "'b' depends on itself"),
    Case("cycle", with_head("""
  b: {platform: sim, depends_on: [c]}
  c: {platform: sim, depends_on: [d]}
  d: {platform: sim, depends_on: [a, b]}
"""), 10, "service 'b' field 'depends_on'", "dependency cycle: b -> c -> d -> b"),
    Case("depends-on-not-a-list", with_head("  b: {platform: sim, depends_on: a}\n"), 10,
         "service 'b' field 'depends_on'", "expected a list of services, got a string"),
    Case("invalid-service-name", with_head("  b+c: {platform: sim}\n"), 10, "service 'b+c'", "invalid name 'b+c'"),
    # --- durations and retries -------------------------------------------------------------------
    Case("bad-timeout", with_head("  b:\n    platform: sim\n    timeout: 10 minutes\n"), 12,
         "service 'b' field 'timeout'", "invalid duration '10 minutes' (write a number of seconds or units"),
    Case("zero-timeout", with_head("  b:\n    platform: sim\n    timeout: 0\n"), 12,
         "service 'b' field 'timeout'", "must be longer than 0s"),
    Case("bad-expected-duration", with_head("  b:\n    platform: sim\n    expected_duration: -5\n"), 12,
         "service 'b' field 'expected_duration'", "invalid duration -5"),
    Case("bad-sim-duration", with_head("  b:\n    platform: sim\n    duration: 5x\n"), 12,
         "service 'b' field 'duration'", "invalid duration '5x'"),
    Case("negative-retries", with_head("  b:\n    platform: sim\n    retries: -1\n"), 12,
         "service 'b' field 'retries'", "must be >= 0, got -1"),
    Case("retries-wrong-shape", with_head("  b:\n    platform: sim\n    retries: [1, 2]\n"), 12,
         "service 'b' field 'retries'", "expected a number of retries or a mapping, got a list"),
    Case("retries-missing-attempts", with_head("  b:\n    platform: sim\n    retries: {backoff: 1m}\n"), 12,
         "service 'b' field 'retries'", "missing 'attempts'"),
    Case("retries-unknown-key", with_head("  b:\n    platform: sim\n    retries: {attempts: 1, backof: 1m}\n"),
         12, "service 'b' field 'retries'", "unknown field 'backof' (did you mean 'backoff'?)"),
    Case("backoff-above-max", with_head("""
  b:
    platform: sim
    retries:
      attempts: 2
      backoff: 20m
      max_backoff: 5m
"""), 14, "service 'b' field 'retries.backoff'", "backoff (20m) is longer than max_backoff (5m)"),
    Case("bad-default-timeout", with_head("defaults:\n  timeout: soon\n"), 11, "defaults field 'timeout'",
         "invalid duration 'soon'"),
    # --- platform fields of services ------------------------------------------------------------
    Case("databricks-missing-job-id", """
platforms:
  lake: {type: databricks, host: https://adb.example.net}
services:
  ingest:
    platform: lake
""", 4, "service 'ingest'", "missing 'job_id', which databricks services need"),
    Case("databricks-bad-job-id", """
platforms:
  lake: {type: databricks, host: https://adb.example.net}
services:
  ingest: {platform: lake, job_id: nightly}
""", 4, "service 'ingest' field 'job_id'", "expected a whole number >= 1, got a string"),
    Case("snowflake-missing-sql", with_head("  load:\n    platform: wh\n"), 10, "service 'load'",
         "missing 'sql', which snowflake services need"),
    Case("http-missing-path", """
platforms:
  api: {type: http, base_url: http://127.0.0.1:8080}
services:
  publish: {platform: api, method: POST}
""", 4, "service 'publish'", "missing 'path' or 'url', which http services need"),
    Case("http-path-and-url", """
platforms:
  api: {type: http, base_url: http://127.0.0.1:8080}
services:
  publish:
    platform: api
    path: /a
    url: http://127.0.0.1:9/b
""", 7, "service 'publish'", "both 'path' and 'url' are set"),
    Case("http-bad-method", """
platforms:
  api: {type: http, base_url: http://127.0.0.1:8080}
services:
  publish:
    platform: api
    path: /publish
    method: FETCH
""", 7, "service 'publish' field 'method'", "unknown HTTP method 'FETCH' (did you mean 'PATCH'?)"),
    Case("command-missing-run", """
platforms:
  sh: {type: command}
services:
  export: {platform: sh, cwd: /tmp}
""", 4, "service 'export'", "missing 'run', which command services need"),
    Case("command-bad-run", """
platforms:
  sh: {type: command}
services:
  export: {platform: sh, run: []}
""", 4, "service 'export' field 'run'", "expected a command string or a non-empty list of arguments"),
    Case("sim-bad-outcome", with_head("  b: {platform: sim, outcome: succeeded}\n"), 10,
         "service 'b' field 'outcome'", "unknown outcome 'succeeded' (did you mean 'succeed'?)"),
    Case("sim-bad-jitter", with_head("  b: {platform: sim, jitter: 5}\n"), 10,
         "service 'b' field 'jitter'", "jitter must be a fraction from 0 to below 1, got"),
    Case("sim-bad-blind", with_head("  b: {platform: sim, blind: 'yes'}\n"), 10,
         "service 'b' field 'blind'", "blind must be true or false, got"),
    # --- tags ------------------------------------------------------------------------------------
    Case("duplicate-tag", with_head("  b:\n    platform: sim\n    tags: [daily, finance, daily]\n"), 12,
         "service 'b' field 'tags'", "'daily' is listed twice"),
    Case("tag-not-a-string", with_head("  b:\n    platform: sim\n    tags:\n      - daily\n      - [x]\n"), 14,
         "service 'b' field 'tags[1]'", "expected a tag, got a list"),
    Case("tags-not-a-list", with_head("  b:\n    platform: sim\n    tags: daily\n"), 12,
         "service 'b' field 'tags'", "expected a list of tags, got a string"),
    # --- environment references and secrets -----------------------------------------------------
    Case("unclosed-reference", """
platforms:
  api:
    type: http
    base_url: ${API_URL
services: {}
""", 4, "platform 'api' field 'base_url'", "unclosed '${'"),
    Case("bad-reference-in-spec", with_head("  load:\n    platform: wh\n    sql: select '${1DAY}'\n"), 12,
         "service 'load' field 'sql'", "invalid variable name '1DAY'"),
    Case("literal-password", """
platforms:
  wh:
    type: snowflake
    account: acme
    user: tower
    password: hunter2
services: {}
""", 6, "platform 'wh' field 'password'",
         "a secret is written literally in the catalog (secrets never live in the catalog: put it in an "
         "environment variable and write ${WH_PASSWORD})"),
    Case("literal-private-key", """
platforms:
  wh: {type: snowflake, account: acme, user: tower, private_key: MIIEvQIBADANBg}
services: {}
""", 2, "platform 'wh' field 'private_key'", "a secret is written literally"),
    Case("literal-token", """
platforms:
  lake:
    type: databricks
    host: https://adb.example.net
    token: dapi0123456789
services: {}
""", 5, "platform 'lake' field 'token'", "write ${LAKE_TOKEN}"),
    Case("literal-client-secret", """
platforms:
  lake:
    type: databricks
    host: https://adb.example.net
    client_id: 0000-1111
    client_secret: 12345
services: {}
""", 6, "platform 'lake' field 'client_secret'", "a secret is written literally"),
    Case("literal-authorization-header", """
platforms:
  api:
    type: http
    base_url: http://127.0.0.1:8080
    headers:
      Accept: application/json
      Authorization: Bearer abc123
services: {}
""", 7, "platform 'api' field 'headers.Authorization'", "a secret is written literally"),
    Case("literal-api-key-header-on-service", """
platforms:
  api: {type: http, base_url: http://127.0.0.1:8080}
services:
  publish:
    platform: api
    path: /publish
    headers: {X-Api-Key: k-123}
""", 7, "service 'publish' field 'headers.X-Api-Key'", "a secret is written literally"),
    Case("default-on-a-secret", """
platforms:
  wh:
    type: snowflake
    account: acme
    user: tower
    password: ${SNOWFLAKE_PASSWORD:-hunter2}
services: {}
""", 6, "platform 'wh' field 'password'", "a secret has a default written in the catalog"),
    Case("default-on-a-secret-header", """
platforms:
  api:
    type: http
    base_url: http://127.0.0.1:8080
    headers: {Authorization: "Bearer ${API_TOKEN:-abc}"}
services: {}
""", 5, "platform 'api' field 'headers.Authorization'", "write ${API_TOKEN} and export API_TOKEN"),
    # --- Snowflake statements and their binds ----------------------------------------------------
    Case("no-statement", with_head("  load:\n    platform: wh\n    sql: \"; -- nothing\"\n"),
         12, "service 'load' field 'sql'", "the SQL holds no statement"),
    Case("two-statements", with_head("  load:\n    platform: wh\n    sql: DELETE FROM t; INSERT INTO t SELECT 1\n"),
         12, "service 'load' field 'sql'", "2 SQL statements in one service"),
    Case("pyformat-placeholder", with_head("""
  load:
    platform: wh
    sql: "CALL load_orders(%(business_date)s)"
    params: {business_date: '2026-11-24'}
"""), 12, "service 'load' field 'sql'", "'%(business_date)s' is not a placeholder Tower fills (write ?"),
    Case("placeholders-without-bind", with_head("  load:\n    platform: wh\n    sql: CALL load(?, ?)\n"),
         12, "service 'load' field 'sql'", "the SQL has 2 '?' placeholders but bind names 0 params"),
    Case("bind-more-than-placeholders", with_head("""
  load:
    platform: wh
    sql: CALL load(?)
    bind: [day, region]
    params: {day: x, region: y}
"""), 13, "service 'load' field 'bind'", "the SQL has 1 '?' placeholder but bind names 2 params"),
    Case("bind-undeclared", with_head("""
  load:
    platform: wh
    sql: CALL load(?)
    bind: [day]
pipelines:
  p: {services: [load]}
"""), 13, "service 'load' field 'bind'",
         "bind names param 'day', which the service does not declare, nor pipeline 'p' that runs it"),
    Case("bind-undeclared-by-one-pipeline", with_head("""
  load:
    platform: wh
    sql: CALL load(?)
    bind: [day]
pipelines:
  daily: {services: [load], params: {day: '2026-11-24'}}
  adhoc: {services: ['*']}
"""), 13, "service 'load' field 'bind'", "nor pipeline 'adhoc' that runs it"),
    Case("bind-typo", with_head("""
  load:
    platform: wh
    sql: CALL load(?)
    bind: [dya]
    params: {day: '2026-11-24'}
"""), 13, "service 'load' field 'bind'", "did you mean 'day'?"),
    Case("bind-in-no-pipeline", with_head("  load: {platform: wh, sql: CALL load(?), bind: [day]}\n"),
         10, "service 'load' field 'bind'", "which neither the service nor any pipeline declares"),
    # --- pipelines: schedules, time zones, selectors, events -------------------------------------
    Case("cron-four-fields", with_head("pipelines:\n  nightly:\n    schedule: '30 2 * *'\n"), 12,
         "pipeline 'nightly' field 'schedule'",
         "invalid cron '30 2 * *': expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
    Case("cron-six-fields", with_head("pipelines:\n  nightly:\n    schedule: {cron: '0 30 2 * * *'}\n"), 12,
         "pipeline 'nightly' field 'schedule.cron'", "expected 5 fields"),
    Case("cron-out-of-range", with_head("pipelines:\n  nightly:\n    schedule: '61 2 * * *'\n"), 12,
         "pipeline 'nightly' field 'schedule'", "invalid cron '61 2 * * *'"),
    Case("cron-minute-out-of-range", with_head("pipelines:\n  nightly:\n    schedule: '61 2 * * *'\n"), 12,
         "pipeline 'nightly' field 'schedule'", "the minute field '61' is out of range (the minute is 0-59;"),
    Case("cron-month-out-of-range", with_head("pipelines:\n  nightly:\n    schedule: '0 2 * 13 *'\n"), 12,
         "pipeline 'nightly' field 'schedule'", "the month field '13' is out of range"),
    Case("cron-weekday-not-valid", with_head("pipelines:\n  nightly:\n    schedule: '0 2 * * FUNDAY'\n"), 12,
         "pipeline 'nightly' field 'schedule'", "the day-of-week field 'FUNDAY' is not valid"),
    Case("cron-not-a-cron", with_head("pipelines:\n  nightly:\n    schedule: 'at two every day'\n"), 12,
         "pipeline 'nightly' field 'schedule'", "invalid cron 'at two every day'"),
    Case("schedule-missing-cron", with_head("pipelines:\n  nightly:\n    schedule: {timezone: UTC}\n"), 12,
         "pipeline 'nightly' field 'schedule'", "missing 'cron'"),
    Case("bad-timezone", with_head("""
pipelines:
  nightly:
    schedule:
      cron: "30 2 * * *"
      timezone: Europe/Londn
"""), 14, "pipeline 'nightly' field 'schedule.timezone'",
         "unknown time zone 'Europe/Londn' (did you mean 'Europe/London'?)"),
    Case("bad-pipeline-timezone", with_head("pipelines:\n  nightly:\n    schedule: '30 2 * * *'\n"
                                            "    timezone: Mars/Olympus\n"), 13,
         "pipeline 'nightly' field 'timezone'", "unknown time zone 'Mars/Olympus' (use an IANA name"),
    Case("timezone-twice", with_head("pipelines:\n  nightly:\n    timezone: UTC\n"
                                     "    schedule: {cron: '30 2 * * *', timezone: UTC}\n"), 13,
         "pipeline 'nightly' field 'schedule.timezone'", "time zone set both here and on the pipeline"),
    Case("bad-catchup", with_head("pipelines:\n  nightly:\n    schedule:\n      cron: '30 2 * * *'\n"
                                  "      catchup: every\n"), 14,
         "pipeline 'nightly' field 'schedule.catchup'", "unknown catchup policy 'every' (use latest, all or none"),
    Case("selector-matches-nothing", with_head("  load_orders: {platform: sim}\npipelines:\n  p:\n"
                                               "    services: [a, load_ordrs+]\n"), 13,
         "pipeline 'p' field 'services'", "selector 'load_ordrs+' matches no service (did you mean 'load_orders'?)"),
    Case("tag-selector-matches-nothing", with_head("  b: {platform: sim, tags: [finance]}\npipelines:\n  p:\n"
                                                   "    services: [tag:finanse]\n"), 13,
         "pipeline 'p' field 'services'", "selector 'tag:finanse' matches no service (did you mean 'finance'?)"),
    Case("bad-selector-syntax", with_head("pipelines:\n  p:\n    services: [a+b]\n"), 12,
         "pipeline 'p' field 'services'", "bad selector 'a+b'"),
    Case("empty-selector-list", with_head("pipelines:\n  p:\n    services: []\n"), 12,
         "pipeline 'p' field 'services'", "selects no services"),
    Case("on-event-wrong-type", with_head("pipelines:\n  p:\n    on_event: {type: x}\n"), 12,
         "pipeline 'p' field 'on_event'", "expected a list of event types, got a mapping"),
    Case("priority-out-of-range", with_head("pipelines:\n  p:\n    priority: 1000\n"), 12,
         "pipeline 'p' field 'priority'", "expected a whole number from -100 to 100, got 1000"),
    Case("priority-not-a-number", with_head("pipelines:\n  p:\n    priority: high\n"), 12,
         "pipeline 'p' field 'priority'", "expected a whole number from -100 to 100, got 'high'"),
    Case("params-not-a-mapping", with_head("pipelines:\n  p:\n    params: [date]\n"), 12,
         "pipeline 'p' field 'params'", "expected a mapping, got a list"),
    # --- the catalog as a whole ------------------------------------------------------------------
    Case("empty-catalog", "# nothing here yet\n", 1, "catalog", "the catalog is empty"),
    Case("top-level-list", "- a\n- b\n", 1, "catalog", "expected a mapping at the top, got a list"),
    Case("no-services", "platforms:\n  sim: {type: sim}\n", 1, "catalog", "no 'services' declared"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_mistake_is_reported_with_its_place_and_line(case, problems):
    found = problems(case.text)
    matching = [p for p in found if p.line == case.line and p.where == case.where
                and case.message in f"{p.what} ({p.hint})"]
    assert matching, "\n".join(str(p) for p in found) or "no problems found"
    assert str(matching[0]).startswith(f"{matching[0].path}:{case.line}:{matching[0].column}: {case.where}: ")


def test_the_head_used_by_the_cases_is_valid(problems):
    assert problems(HEAD) == []


def test_secrets_are_never_echoed(problems):
    found = problems("""
platforms:
  wh:
    type: snowflake
    account: acme
    user: tower
    password: [hunter2-in-a-list]
  api:
    type: http
    base_url: http://127.0.0.1:8080
    headers: {Authorization: Bearer sk-live-123}
services: {}
""")
    text = "\n".join(str(p) for p in found)
    assert "hunter2" not in text and "sk-live-123" not in text
    assert {p.where for p in found} == {"platform 'wh' field 'password'", "platform 'api' field 'headers.Authorization'"}
    assert sum("a secret is written literally" in p.what for p in found) == 2


def test_every_problem_is_reported_at_once_in_file_order(problems):
    found = problems(with_head("""
  b:
    platform: simm
    timeout: forever
    depends_on: [zz]
pipelines:
  p:
    schedule: '99 * * * *'
"""))
    assert [(p.line, p.where) for p in found] == [
        (11, "service 'b' field 'platform'"),
        (12, "service 'b' field 'timeout'"),
        (13, "service 'b' field 'depends_on'"),
        (16, "pipeline 'p' field 'schedule'"),
    ]


def test_a_duplicate_key_is_reported_with_the_other_problems(problems):
    found = problems(with_head("  b: {platform: sim, timeout: x}\n  b: {platform: sim}\n"))
    assert [(p.line, p.what.split(" (")[0]) for p in found] == [
        (10, "invalid duration 'x'"),
        (11, "duplicate key 'b'"),
    ]


def test_a_service_on_an_invalid_platform_gets_no_cascade_of_field_errors(problems):
    found = problems("""
platforms:
  lake: {type: databrick}
services:
  ingest: {platform: lake, job_id: not-a-number}
""")
    assert [p.where for p in found] == ["platform 'lake' field 'type'"]


def test_several_cycles_are_each_reported(problems):
    found = problems(with_head("""
  b: {platform: sim, depends_on: [c]}
  c: {platform: sim, depends_on: [b]}
  d: {platform: sim, depends_on: [e]}
  e: {platform: sim, depends_on: [d]}
"""))
    assert [p.what for p in found] == ["dependency cycle: b -> c -> b", "dependency cycle: d -> e -> d"]


def test_a_bad_default_is_reported_once_not_for_every_service(problems):
    found = problems("""
platforms:
  sim: {type: sim}
defaults:
  platform: simm
  params: [x]
services:
  a: {}
  b: {params: {y: 1}}
""")
    assert [(p.line, p.where) for p in found] == [(4, "defaults field 'platform'"), (5, "defaults field 'params'")]


def test_close_match_is_the_lookup_did_you_mean_words():
    from tower.catalog.checks import close_match, did_you_mean

    assert close_match("hots", ("host", "token")) == "host"
    assert close_match("zzz", ("host", "token")) is None
    assert did_you_mean("hots", ("host", "token")) == "did you mean 'host'?"
    assert did_you_mean("zzz", ("host", "token"), "known fields") == "known fields: host, token"
    assert did_you_mean("zzz", ()) == "none are declared"
