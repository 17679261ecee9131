"""Loading valid catalogs: the model built, defaults, locations, and how unreadable files fail."""

from pathlib import Path

import pytest

from tower.catalog import RetryPolicy, Schedule, load_catalog
from tower.catalog.env import resolve
from tower.errors import CatalogError, ConfigError

REFINERY = Path(__file__).resolve().parents[2] / "examples" / "refinery" / "catalog.yaml"


def test_the_refinery_example_is_valid_and_realistic():
    catalog = load_catalog(REFINERY)
    assert len(catalog.services) >= 25
    assert set(catalog.pipelines) == {"nightly", "orders_arrived", "adhoc"}
    assert {p.type for p in catalog.platforms.values()} >= {"databricks", "snowflake", "http"}
    assert all(svc.expected_duration and 60 <= svc.expected_duration <= 3600 for svc in catalog.services.values())
    assert catalog.pipelines["nightly"].schedule == Schedule("30 2 * * *", "Europe/London", "latest")
    assert catalog.pipelines["orders_arrived"].on_event == ("orders.landed",)
    assert catalog.pipelines["orders_arrived"].selectors == ("ingest_orders+",)
    assert catalog.pipelines["orders_arrived"].priority == 10 and catalog.pipelines["nightly"].priority == 0
    assert catalog.platforms["lakehouse"].max_concurrency and catalog.platforms["warehouse"].max_concurrency


def test_the_model_keeps_types_locations_and_unresolved_references(write):
    path = write("""
        platforms:
          lake:
            type: databricks
            host: ${DATABRICKS_HOST}
            token: ${DATABRICKS_TOKEN}
            max_concurrency: 2
          api: {type: http, base_url: "${API_URL:-http://127.0.0.1:8080}"}
          sim: {type: sim}
        services:
          ingest:
            platform: lake
            job_id: "42"
            timeout: 1h30m
            expected_duration: 20m
            retries: 2
            tags: [ingest, daily]
          publish:
            platform: api
            path: /publish
            method: post
            body: {date: 2026-11-24, force: yes}
            depends_on: [ingest]
            retries: {attempts: 3, backoff: 10s, max_backoff: 1m}
          wait:
            platform: sim
            duration: 90s
            fail_attempts: 1
        pipelines:
          nightly:
            schedule: "0 3 * * 1-5"
            timezone: America/New_York
            params: {region: eu}
          later:
            on_event: files.landed
    """)
    catalog = load_catalog(path)
    lake = catalog.platforms["lake"]
    assert (lake.type, lake.max_concurrency) == ("databricks", 2)
    assert lake.settings == {"host": "${DATABRICKS_HOST}", "token": "${DATABRICKS_TOKEN}"}
    assert type(lake.settings) is dict  # plain values in the model, no YAML bookkeeping
    assert (lake.location.line, lake.location.column) == (2, 3)

    ingest, publish, wait = catalog.services.values()
    assert ingest.spec == {"job_id": 42}
    assert (ingest.timeout, ingest.expected_duration) == (5400.0, 1200.0)
    assert ingest.retry == RetryPolicy(retries=2) and ingest.retry.attempts == 3
    assert ingest.tags == ("ingest", "daily")
    assert ingest.location.line == 10
    assert publish.spec == {"path": "/publish", "method": "POST", "body": {"date": "2026-11-24", "force": "yes"}}
    assert publish.depends_on == ("ingest",)
    assert publish.retry == RetryPolicy(retries=3, backoff=10.0, max_backoff=60.0)
    assert wait.spec == {"duration": 90.0, "fail_attempts": 1}
    assert wait.expected_duration == 90.0  # a simulated service is expected to take its duration

    nightly, later = catalog.pipelines.values()
    assert nightly.schedule == Schedule("0 3 * * 1-5", "America/New_York", "latest")
    assert nightly.selectors == ("*",)  # no services key: every service
    assert nightly.params == {"region": "eu"}
    assert later.schedule is None and later.on_event == ("files.landed",)
    assert catalog.deps() == {"ingest": (), "publish": ("ingest",), "wait": ()}


def test_defaults_apply_unless_a_service_overrides_them(write):
    catalog = load_catalog(write("""
        platforms:
          sim: {type: sim}
        defaults:
          platform: sim
          timeout: 2h
          retries: {attempts: 1, backoff: 1m}
          tags: [refinery]
          params: {env: prod, region: eu}
        services:
          plain: {}
          custom:
            timeout: 5m
            retries: 0
            tags: [special]
            params: {region: us}
    """))
    plain, custom = catalog.services["plain"], catalog.services["custom"]
    assert plain.platform == "sim" and custom.platform == "sim"
    assert (plain.timeout, plain.retry, plain.tags) == (7200.0, RetryPolicy(1, 60.0, 600.0), ("refinery",))
    assert plain.params == {"env": "prod", "region": "eu"}
    assert (custom.timeout, custom.retry, custom.tags) == (300.0, RetryPolicy(0), ("special",))
    assert custom.params == {"env": "prod", "region": "us"}  # params merge; other fields replace


def test_a_long_backoff_alone_raises_the_cap(write):
    catalog = load_catalog(write("""
        platforms: {sim: {type: sim}}
        services:
          a: {platform: sim, retries: {attempts: 2, backoff: 20m}}
    """))
    assert catalog.services["a"].retry == RetryPolicy(2, 1200.0, 1200.0)


def test_yaml_anchors_and_merge_keys_work(write):
    catalog = load_catalog(write("""
        platforms: {sim: {type: sim}}
        services:
          a: &base {platform: sim, timeout: 10m, tags: [x]}
          b:
            <<: *base
            timeout: 20m
    """))
    assert catalog.services["b"].timeout == 1200.0 and catalog.services["b"].tags == ("x",)


def test_yes_no_and_dates_stay_strings_but_true_false_are_booleans(write):
    catalog = load_catalog(write("""
        platforms: {sim: {type: sim}}
        services: {a: {platform: sim}}
        pipelines:
          p: {params: {flag: no, on: on, date: 2026-01-02, real: true}}
    """))
    assert catalog.pipelines["p"].params == {"flag": "no", "on": "on", "date": "2026-01-02", "real": True}


def test_settings_are_resolved_at_use_not_at_load(write):
    catalog = load_catalog(write("""
        platforms:
          warehouse:
            type: snowflake
            account: ${SNOWFLAKE_ACCOUNT:-acme}
            user: tower
            password: ${SNOWFLAKE_PASSWORD}
        services:
          load: {platform: warehouse, sql: "call load('${REGION:-eu}')"}
    """))  # loads although SNOWFLAKE_PASSWORD is not set
    warehouse = catalog.platforms["warehouse"]
    with pytest.raises(ConfigError) as caught:  # as the activities read them, at use
        resolve(warehouse.settings, {}, where="platform 'warehouse'")
    assert str(caught.value) == (
        "platform 'warehouse' field 'password': environment variable SNOWFLAKE_PASSWORD is not set"
        " (export it)"
    )
    settings = resolve(warehouse.settings, {"SNOWFLAKE_PASSWORD": "s3cret"}, where="platform 'warehouse'")
    assert settings == {"account": "acme", "user": "tower", "password": "s3cret"}
    assert warehouse.settings["password"] == "${SNOWFLAKE_PASSWORD}"  # the model is untouched
    assert resolve(catalog.services["load"].spec, {"REGION": "us"}) == {"sql": "call load('us')"}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "missing.yaml", "file not found"),
        (lambda tmp: tmp, "is a directory, not a catalog file"),
        (lambda tmp: _write_bytes(tmp / "c.yaml", b"\x7fELF\x00\x01\x02"), "this is a binary file, not YAML"),
        (lambda tmp: _write_bytes(tmp / "c.yaml", b"services:\n  a: \xff\xfe\n"), "not valid UTF-8 text"),
    ],
    ids=["missing", "directory", "binary", "not-utf8"],
)
def test_unreadable_files_are_catalog_errors_naming_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    (problem,) = caught.value.problems
    assert problem.path == str(path) and message in problem.what
    assert str(caught.value).startswith(f"{path}:")


def test_a_utf8_error_points_at_its_line(tmp_path):
    path = _write_bytes(tmp_path / "c.yaml", b"platforms: {}\nservices:\n  a: \xff\n")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.problems[0].line == 3


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_every_setting_and_field_the_adapters_read_is_accepted(write):
    catalog = load_catalog(write("""
        platforms:
          lake:
            type: databricks
            host: https://adb.example.net
            auth: managed_identity
            client_id: 0000-1111
            azure_resource_id: /subscriptions/x/workspaces/y
            retry_timeout: 60
            http_timeout: ${DATABRICKS_HTTP_TIMEOUT:-30}
          wh:
            type: snowflake
            account: acme
            user: tower
            private_key: ${SNOWFLAKE_PRIVATE_KEY}
            private_key_passphrase: ${SNOWFLAKE_KEY_PASSPHRASE}
            host: 127.0.0.1
            port: 8123
            protocol: http
            login_timeout: 30
            network_timeout: 60
          api:
            type: http
            base_url: https://api.example.com
            auth: {audience: api://refinery, client_id: 0000-2222}
            timeout: 30
            max_retries: 4
            max_retry_wait: 30
          sh: {type: command, kill_grace: 5}
          sim: {type: sim, time_scale: 0.001}
        services:
          job: {platform: lake, job_id: 7, job_parameters: {mode: full}}
          query: {platform: wh, sql: "insert into t select ?", bind: [date], params: {date: "2026-11-24"}}
          call:
            platform: api
            url: https://other.example.com/run
            status_path: result.state
            success_values: [DONE]
            failure_values: [ERROR]
            cancelled_values: [STOPPED]
            cancel_path: /cancel
            cancel_method: delete
          script: {platform: sh, run: [python, x.py], cwd: /tmp, env: {MODE: full}}
    """))
    assert catalog.platforms["sim"].settings == {"time_scale": 0.001}
    assert catalog.services["query"].spec == {"sql": "insert into t select ?", "bind": ["date"]}
    assert catalog.services["call"].spec["cancel_method"] == "DELETE"
    assert catalog.services["job"].spec == {"job_id": 7, "job_parameters": {"mode": "full"}}
