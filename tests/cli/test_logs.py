"""A failed service says why: stderr in its error, where its output is in `tower status`, and
`tower logs RUN SERVICE` (a command's output; a Snowflake query id and its result rows)."""

import json

import pytest

from tower.cli.main import main

CATALOG = """\
platforms:
  sh: {{type: command}}
services:
  extract:
    platform: sh
    run: 'echo "read 3 files"; echo "no such table: orders" >&2; exit 3'
pipelines:
  daily: {{services: [extract]}}
{extra}"""


@pytest.fixture
def work(tmp_path, monkeypatch):
    def write(extra: str = ""):
        (tmp_path / "catalog.yaml").write_text(CATALOG.format(extra=extra))
    write()
    monkeypatch.setenv("TOWER_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    return write


def tower(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_a_failed_command_says_why_and_where_its_output_is(work, capsys):
    code, out, _ = tower(capsys, "run", "daily", "--json")
    assert code == 1
    run = json.loads(out)
    assert run["services"]["extract"]["error"] == "exit code 3: no such table: orders"

    code, out, _ = tower(capsys, "status", run["run_id"])
    assert code == 0
    hint = f"tower logs {run['run_id']} extract ("
    assert hint in out and out.split(hint)[1].split(")")[0].endswith(".err")

    code, out, _ = tower(capsys, "logs", run["run_id"], "extract")
    assert code == 0
    assert f"extract (command) in run {run['run_id']}: failed, attempt 1" in out
    assert "stdout" in out and "read 3 files" in out
    assert "stderr" in out and "no such table: orders" in out


def test_logs_of_an_unknown_service_is_a_usage_error(work, capsys):
    _, out, _ = tower(capsys, "run", "daily", "--json")
    code, _, err = tower(capsys, "logs", json.loads(out)["run_id"], "extrakt")
    assert code == 2 and "no service 'extrakt'" in err and "did you mean 'extract'?" in err


SNOWFLAKE_CATALOG = """\
platforms:
  warehouse:
    type: snowflake
    account: fakesnow
    user: tower
    password: ${SNOWFLAKE_PASSWORD}
    host: 127.0.0.1
    port: ${FAKESNOW_PORT}
    protocol: http
services:
  regions:
    platform: warehouse
    sql: SELECT 'emea' AS region, 165 AS total UNION ALL SELECT 'amer', 80
pipelines:
  daily: {services: [regions]}
"""


@pytest.mark.slow
def test_logs_of_a_snowflake_service_show_the_query_id_and_its_rows(tmp_path, capsys, monkeypatch):
    from tests.platforms import fakesnow_server

    (tmp_path / "catalog.yaml").write_text(SNOWFLAKE_CATALOG)
    monkeypatch.setenv("TOWER_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "local")
    process, port = fakesnow_server.start()
    try:
        monkeypatch.setenv("FAKESNOW_PORT", str(port))
        code, out, err = tower(capsys, "run", "daily", "--json")
        assert code == 0, err
        run = json.loads(out)
        query_id = run["services"]["regions"]["remote_id"]
        code, out, _ = tower(capsys, "logs", run["run_id"], "regions")
    finally:
        fakesnow_server.stop(process)
    assert code == 0
    assert f"query id: {query_id}" in out
    assert "emea, 165" in out and "amer, 80" in out


DATABRICKS_CATALOG = """\
platforms:
  lake: {{type: databricks, host: "{host}", token: "${{DATABRICKS_TOKEN}}", retry_timeout: 20}}
services:
  ingest: {{platform: lake, job_id: 11}}
pipelines:
  nightly: {{services: [ingest]}}
"""


@pytest.mark.slow
def test_logs_of_a_databricks_service_show_its_run_page(tmp_path, capsys, monkeypatch):
    from tests.platforms import jobs_api_server as jobs

    for name in ("DATABRICKS_HOST", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE",
                 "DATABRICKS_AUTH_TYPE", "ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "TOWER_HISTORY_TABLE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/databrickscfg")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-local-test-token")
    server, api = jobs.start("dapi-local-test-token")
    try:
        api.jobs[11] = jobs.FAILS
        (tmp_path / "catalog.yaml").write_text(DATABRICKS_CATALOG.format(host=jobs.url_of(server)))
        monkeypatch.setenv("TOWER_CATALOG", str(tmp_path / "catalog.yaml"))
        monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
        code, out, err = tower(capsys, "run", "nightly", "--json")
        assert code == 1, err
        run = json.loads(out)
        code, out, _ = tower(capsys, "logs", run["run_id"], "ingest")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    remote_id = run["services"]["ingest"]["remote_id"]
    assert f"run page: {jobs.url_of(server)}/#job/11/run/{remote_id}" in out
    assert "ZeroDivisionError" in out


def test_status_shows_the_run_page_of_a_running_service(tmp_path):
    from types import SimpleNamespace

    from tower.cli.logs_cmds import log_lines

    result = {"services": {"ingest": {"status": "running", "url": "https://adb.example/#job/1/run/7"},
                           "clean": {"status": "pending"}}}
    info = SimpleNamespace(run_id="r", plan=None)
    assert log_lines(tmp_path, info, result) == ["run pages of the running services:",
                                                 "  ingest: https://adb.example/#job/1/run/7"]
