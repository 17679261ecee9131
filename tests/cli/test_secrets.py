"""A secret written as a `${VAR:-default}` default is a literal secret: refused before anything runs."""

import pytest

from tower.catalog import resolve
from tower.cli.main import main
from tower.errors import ConfigError

CATALOG = """\
platforms:
  warehouse:
    type: snowflake
    account: acme
    user: tower
    password: ${SNOWFLAKE_PASSWORD:-hunter2}
    host: 127.0.0.1
    port: 9
    protocol: http
    login_timeout: 1
services:
  load: {platform: warehouse, sql: SELECT 1, retries: 0}
pipelines:
  daily: {services: ["*"]}
"""


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    monkeypatch.setenv("TOWER_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SNOWFLAKE_PASSWORD", raising=False)
    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    return tmp_path


def test_a_default_on_a_secret_is_a_validation_error_at_its_line_and_column(work, capsys):
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "catalog.yaml:6:15: platform 'warehouse' field 'password': a secret has a default" in err
    assert "write ${SNOWFLAKE_PASSWORD} and export SNOWFLAKE_PASSWORD" in err
    assert "hunter2" not in err


def test_the_default_secret_never_reaches_the_state_the_ledger_or_an_instance_input(work, capsys):
    assert main(["run", "daily"]) == 2
    assert "hunter2" not in capsys.readouterr().err
    home = work / "home"
    leaked = [path for path in home.rglob("*") if path.is_file() and b"hunter2" in path.read_bytes()]
    assert leaked == []


def test_the_missing_variable_hint_offers_no_default_for_a_secret():
    with pytest.raises(ConfigError) as secret:
        resolve({"password": "${WH_PASSWORD}"}, {}, where="platform 'wh'")
    assert "export it)" in str(secret.value) and ":-default" not in str(secret.value)
    with pytest.raises(ConfigError) as header:
        resolve({"headers": {"Authorization": "${API_TOKEN}"}}, {}, where="platform 'api'")
    assert ":-default" not in str(header.value)
    with pytest.raises(ConfigError) as plain_setting:
        resolve({"base_url": "${API_URL}"}, {}, where="platform 'api'")
    assert "${API_URL:-default}" in str(plain_setting.value)


def test_an_empty_default_on_a_secret_holds_nothing_and_is_allowed(tmp_path, capsys):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("""\
platforms:
  wh: {type: snowflake, account: acme, user: tower, private_key: "${WH_KEY}", private_key_passphrase: "${WH_PASSPHRASE:-}"}
services: {}
""")
    assert main(["--catalog", str(catalog), "validate"]) == 0, capsys.readouterr().err
