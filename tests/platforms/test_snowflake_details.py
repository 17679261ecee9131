"""The Snowflake adapter's details, at its `connect=` seam: where a failed connection went, key-pair
authentication from a file (encrypted or not), and the message of a query that failed."""

from __future__ import annotations

import pytest

from tower.errors import ConfigError, NonRetryableError, RetryableError
from tower.platforms.base import Handle, Status, Submission
from tower.platforms.snowflake import SnowflakeAdapter, status_from_query
from tower.states import RemoteState


def refused(**kwargs):
    from snowflake.connector.errors import OperationalError

    raise OperationalError(msg="Connection refused")


SETTINGS = {"account": "acme", "user": "tower", "password": "not-a-secret"}


@pytest.mark.parametrize(("extra", "where"), [
    ({}, "https://acme.snowflakecomputing.com:443, account acme"),
    ({"protocol": "http"}, "http://acme.snowflakecomputing.com:80, account acme"),
    ({"host": "sf.internal", "port": 8443}, "https://sf.internal:8443, account acme"),
])
def test_a_connection_that_fails_names_where_it_went(extra, where):
    adapter = SnowflakeAdapter({**SETTINGS, **extra}, connect=refused)
    with pytest.raises(RetryableError) as caught:
        adapter.submit(Submission("r", "load", 1, {"sql": "SELECT 1"}))
    assert str(caught.value) == f"Snowflake submit of service 'load' failed (connecting to {where}): Connection refused"
    assert caught.value.platform == "snowflake"
    with pytest.raises(RetryableError) as caught:
        adapter.cancel(Handle(remote_id="q-7"))
    assert str(caught.value) == f"Snowflake cancel of query q-7 failed (connecting to {where}): Connection refused"


def _pem(passphrase: bytes | None):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


class Session:
    """A connection that knows one query: q1, failed with `error` (or with no error to fetch)."""

    def __init__(self, error: str | None = None):
        self.error, self.closed = error, False

    def get_query_status(self, query_id):
        from snowflake.connector.constants import QueryStatus

        return QueryStatus["FAILED_WITH_INCIDENT" if self.error is None else "FAILED_WITH_ERROR"]

    def get_query_status_throw_if_error(self, query_id):
        from snowflake.connector.errors import ProgrammingError

        if query_id == "q1" and self.error:
            raise ProgrammingError(msg=self.error, errno=2003, sfqid=query_id)

    def close(self):
        self.closed = True


@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_a_private_key_file_reaches_the_connector_as_a_key_object(tmp_path, passphrase):
    key, pem = _pem(passphrase)
    path = tmp_path / "rsa_key.p8"
    path.write_text(pem)
    seen = {}
    settings = {"account": "a", "user": "u", "private_key": str(path),
                **({"private_key_passphrase": passphrase.decode()} if passphrase else {})}
    SnowflakeAdapter(settings, connect=lambda **kw: seen.update(kw) or Session("x")).poll(Handle(remote_id="q1"))
    assert seen["private_key"].private_numbers() == key.private_numbers()


def test_an_encrypted_key_with_the_wrong_passphrase_is_a_config_error_without_the_key(tmp_path):
    _, pem = _pem(b"correct horse")
    path = tmp_path / "rsa_key.p8"
    path.write_text(pem)
    adapter = SnowflakeAdapter({"account": "a", "user": "u", "private_key": str(path),
                                "private_key_passphrase": "wrong"}, connect=lambda **kw: Session("x"))
    with pytest.raises(ConfigError, match="^snowflake platform: 'private_key' could not be loaded: ") as caught:
        adapter.poll(Handle(remote_id="q1"))
    assert "BEGIN" not in str(caught.value)


def test_a_failed_query_keeps_its_own_error_and_one_without_any_says_how_it_ended():
    error = "SQL compilation error: Object 'ORDERS' does not exist or not authorized."
    failed = SnowflakeAdapter(SETTINGS, connect=lambda **kw: Session(error))
    assert failed.poll(Handle(remote_id="q1")) == Status(RemoteState.FAILED, message=f"002003: {error}")  # not retried
    silent = SnowflakeAdapter(SETTINGS, connect=lambda **kw: Session(None))
    assert silent.poll(Handle(remote_id="q1")) == Status(RemoteState.FAILED, message="query ended FAILED_WITH_INCIDENT",
                                                         retryable=True)


def test_a_statement_that_is_empty_names_the_service_and_field():
    adapter = SnowflakeAdapter(SETTINGS, connect=refused)
    with pytest.raises(NonRetryableError) as caught:
        adapter.submit(Submission("r", "load", 1, {"sql": "   "}))
    assert (str(caught.value), caught.value.platform) == ("service 'load': field 'sql' must be one SQL statement",
                                                          "snowflake")


@pytest.mark.parametrize(("name", "message", "expected"), [
    ("RUNNING", "", Status(RemoteState.RUNNING, message="running")),
    ("RESUMING_WAREHOUSE", "", Status(RemoteState.RUNNING, message="resuming warehouse")),
    ("SUCCESS", "", Status(RemoteState.SUCCEEDED)),
    ("ABORTED", "", Status(RemoteState.CANCELLED, message="query cancelled")),
    ("ABORTED", "cancelled by the warehouse admin", Status(RemoteState.CANCELLED, message="cancelled by the warehouse admin")),
    ("FAILED_WITH_ERROR", "", Status(RemoteState.FAILED, message="query ended FAILED_WITH_ERROR", retryable=True)),
])
def test_every_query_status_maps_to_a_whole_status(name, message, expected):
    assert status_from_query(name, message) == expected


class Submitting:
    """A connection whose query history cannot be read (as without a current database), and that
    starts query q-1; its results cannot be fetched (they expired)."""

    def __init__(self):
        self.started = []

    def cursor(self):
        return self

    def execute(self, sql, params=None):
        from snowflake.connector.errors import ProgrammingError

        raise ProgrammingError(msg="Cannot perform SELECT. This session does not have a current database.\nhint")

    def execute_async(self, sql, params=None):
        self.started.append(sql)
        self.sfqid = f"q-{len(self.started)}"

    def get_query_status(self, query_id):
        from snowflake.connector.constants import QueryStatus

        return QueryStatus.SUCCESS

    def get_results_from_sfqid(self, query_id):
        raise RuntimeError("result expired")

    def close(self):
        pass


def test_unreadable_history_is_warned_about_once_per_adapter(caplog):
    conn = Submitting()
    for database in ("sales", "finance"):
        adapter = SnowflakeAdapter({**SETTINGS, "database": database}, connect=lambda **kw: conn)
        for _ in range(2):
            assert adapter.submit(Submission("r", "load", 1, {"sql": "SELECT 1"})).remote_id == f"q-{len(conn.started)}"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["Snowflake query history not readable (Cannot perform SELECT. This session does not have a "
                        "current database.): submitting without the re-attach check"] * 2


def test_a_success_whose_results_expired_has_no_preview():
    adapter = SnowflakeAdapter(SETTINGS, connect=lambda **kw: Submitting())
    assert adapter.poll(Handle(remote_id="q-1")) == Status(RemoteState.SUCCEEDED)


def test_a_session_is_opened_with_server_side_binding_timeouts_and_the_query_tag():
    seen = []
    settings = {**SETTINGS, "warehouse": "wh", "database": "db", "schema": "", "role": None, "host": "sf.local",
                "port": 8080, "protocol": "http"}
    adapter = SnowflakeAdapter(settings, connect=lambda **kw: seen.append(kw) or Submitting())
    adapter.submit(Submission("r", "load", 1, {"sql": "SELECT 1"}))
    assert seen[0] == {
        "account": "acme", "user": "tower", "password": "not-a-secret", "paramstyle": "qmark",
        "login_timeout": 30, "network_timeout": 60, "client_session_keep_alive": False,
        "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False, "QUERY_TAG": "r/load/1"},
        "warehouse": "wh", "database": "db", "host": "sf.local", "port": 8080, "protocol": "http",
    }
    adapter = SnowflakeAdapter({**SETTINGS, "login_timeout": 5, "network_timeout": 7},
                               connect=lambda **kw: seen.append(kw) or Submitting())
    adapter.poll(Handle(remote_id="q-1"))                      # no query tag outside a submit
    assert (seen[1]["login_timeout"], seen[1]["network_timeout"]) == (5, 7)
    assert seen[1]["session_parameters"] == {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False}
