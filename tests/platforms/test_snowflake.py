"""The Snowflake adapter with the real connector against the Snowflake stand-in (fakesnow's server plus
a query history and SYSTEM$CANCEL_QUERY, see fakesnow_server.py), plus narrow boundary tests for
what no local server shows (RUNNING queries, failures reported at poll)."""

from __future__ import annotations

import logging

import pytest

from tests.platforms import fakesnow_server
from tests.platforms.polling import poll_to_end
from tower.errors import ConfigError, NonRetryableError, RetryableError
from tower.platforms import adapter_for, checked_settings
from tower.platforms.base import Handle, Submission
from tower.platforms.snowflake import SnowflakeAdapter, status_from_query
from tower.states import RemoteState

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")  # fakesnow internals


@pytest.fixture(scope="module")
def snowflake():
    with fakesnow_server.SnowflakeStandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def settings(snowflake):
    return snowflake.settings()


@pytest.fixture(scope="module")
def adapter(settings):
    adapter = adapter_for("snowflake", settings)
    for sql in ("CREATE DATABASE IF NOT EXISTS refinery", "CREATE SCHEMA IF NOT EXISTS refinery.sales"):
        finish(adapter, adapter.submit(sub(sql, service="setup")))
    return adapter


def sub(sql, *, service="load_orders", attempt=1, params=None, bind=None):
    spec = {"sql": sql} if bind is None else {"sql": sql, "bind": bind}
    return Submission(run_id="nightly-1", service=service, attempt=attempt, spec=spec, params=params or {})


def finish(adapter, handle):
    return poll_to_end(adapter, handle, limit=50)[0]


def test_create_insert_select_services(adapter):
    steps = [
        "CREATE OR REPLACE TABLE orders (id INT, region VARCHAR, amount INT)",
        "INSERT INTO orders VALUES (1, 'emea', 10), (2, 'amer', 20), (3, 'emea', 5)",
        "SELECT region, SUM(amount)::INT AS total FROM orders GROUP BY region ORDER BY region",
    ]
    statuses = [finish(adapter, adapter.submit(sub(sql, service=f"step{i}"))) for i, sql in enumerate(steps)]
    assert [s.state for s in statuses] == [RemoteState.SUCCEEDED] * 3
    assert statuses[2].output.splitlines() == ["REGION, TOTAL", "amer, 20", "emea, 15", "(2 rows)"]


def test_a_query_without_rows_says_so(adapter):
    status = finish(adapter, adapter.submit(sub("SELECT 1 AS n WHERE 1 = 0", service="empty")))
    assert (status.state, status.output) == (RemoteState.SUCCEEDED, "N\n(0 rows)")


def test_sql_error_is_non_retryable_with_the_snowflake_message(adapter):
    # fakesnow fails a bad statement at execute_async (Snowflake itself would report it at poll:
    # see test_failed_query_at_poll_keeps_the_message below).
    with pytest.raises(NonRetryableError, match="Table with name NO_SUCH_TABLE does not exist") as caught:
        adapter.submit(sub("SELECT * FROM no_such_table"))
    assert caught.value.platform == "snowflake"
    assert "not-a-real-secret" not in str(caught.value)


def test_run_params_are_bound_so_an_injection_attempt_stays_data(adapter):
    finish(adapter, adapter.submit(sub("CREATE OR REPLACE TABLE notes (day VARCHAR, note VARCHAR)", service="mk")))
    evil = "x'); DROP TABLE notes; --"
    handle = adapter.submit(sub("INSERT INTO notes VALUES (?, ?)", service="ins", bind=["day", "note"],
                                params={"day": "2024-01-01", "note": evil, "unused": 1}))
    assert finish(adapter, handle).state == RemoteState.SUCCEEDED
    status = finish(adapter, adapter.submit(sub("SELECT note FROM notes WHERE day = ?", service="sel",
                                                bind=["day"], params={"day": "2024-01-01"})))
    assert status.output.splitlines()[1] == evil  # the table survived and holds the text verbatim


def test_a_bind_without_its_param_is_a_clear_error(adapter):
    with pytest.raises(NonRetryableError, match=r"service 'load_orders': field 'bind' names param\(s\) 'day'"):
        adapter.submit(sub("SELECT ?", bind=["day"]))


def count_rows(adapter, table):
    status = finish(adapter, adapter.submit(sub(f"SELECT COUNT(*) AS n FROM {table}", service=f"count-{table}")))
    return int(status.output.splitlines()[1])


def test_every_submit_runs_its_statement_under_the_attempt_key_as_query_tag(adapter, snowflake):
    finish(adapter, adapter.submit(sub("CREATE OR REPLACE TABLE tagged (n INT)", service="mk-tagged")))
    for attempt in (1, 2):
        handle = adapter.submit(sub("INSERT INTO tagged VALUES (1)", service="tag", attempt=attempt))
        assert finish(adapter, handle).state == RemoteState.SUCCEEDED
    runs = snowflake.runs_of("INSERT INTO tagged VALUES (1)")
    assert [(run.query_tag, run.user_name) for run in runs] == [("nightly-1/tag/1", "tower"),
                                                                 ("nightly-1/tag/2", "tower")]
    [create] = snowflake.runs_of("CREATE OR REPLACE TABLE tagged (n INT)")
    assert create.query_tag == "nightly-1/mk-tagged/1"


def test_a_resubmit_of_the_same_attempt_reattaches_and_the_statement_runs_once(adapter, settings, snowflake, caplog):
    caplog.set_level(logging.INFO, logger="tower.platforms.snowflake")
    finish(adapter, adapter.submit(sub("CREATE OR REPLACE TABLE hits (n INT)", service="mk-hits")))
    insert = sub("INSERT INTO hits VALUES (1)", service="hit")
    first = adapter.submit(insert)
    assert caplog.messages[-1] == f"service hit: Snowflake query {first.remote_id}"
    assert finish(adapter, first).state == RemoteState.SUCCEEDED
    # A crash between submit and the handle being saved: the activity runs again, in a new process.
    again = adapter_for("snowflake", settings).submit(insert)
    assert again.remote_id == first.remote_id
    assert caplog.messages[-1] == f"service hit: re-attached to Snowflake query {first.remote_id}"
    assert finish(adapter, again).state == RemoteState.SUCCEEDED
    assert [run.query_id for run in snowflake.runs_of("INSERT INTO hits VALUES (1)")] == [first.remote_id]
    assert count_rows(adapter, "hits") == 1


def test_another_attempt_or_service_with_the_same_sql_runs_anew(adapter, snowflake):
    finish(adapter, adapter.submit(sub("CREATE OR REPLACE TABLE retries (n INT)", service="mk-retries")))
    insert = "INSERT INTO retries VALUES (1)"
    handles = [adapter.submit(sub(insert, service="retry", attempt=1)),
               adapter.submit(sub(insert, service="retry", attempt=2)),  # a retry must really run again
               adapter.submit(sub(insert, service="other", attempt=1))]
    assert len({handle.remote_id for handle in handles}) == 3
    assert count_rows(adapter, "retries") == 3


def test_resubmit_where_query_history_is_unreadable_warns_and_runs_again(adapter, snowflake, caplog):
    # `adapter` made the refinery.sales schema this test writes into
    # No database in the session: INFORMATION_SCHEMA.QUERY_HISTORY_BY_USER cannot be read (Snowflake
    # error 090105), so the adapter says so once and executes (at-least-once; see the module docstring).
    bare = adapter_for("snowflake", snowflake.settings(database="", schema=""))
    finish(bare, bare.submit(sub("CREATE OR REPLACE TABLE refinery.sales.blind (n INT)", service="mk-blind")))
    insert = sub("INSERT INTO refinery.sales.blind VALUES (1)", service="blind")
    finish(bare, bare.submit(insert))
    finish(bare, bare.submit(insert))
    assert len(snowflake.runs_of("INSERT INTO refinery.sales.blind VALUES (1)")) == 2
    assert "does not have a current database" in caplog.text
    assert caplog.text.count("query history not readable") == 1


def test_cancel_reaches_system_cancel_query_with_the_query_id(adapter, snowflake):
    handle = adapter.submit(sub("SELECT 42 AS answer", service="answer"))
    assert finish(adapter, handle).state == RemoteState.SUCCEEDED
    adapter.cancel(handle)
    assert snowflake.cancelled[-1] == handle.remote_id
    assert finish(adapter, handle).state == RemoteState.SUCCEEDED  # it had ended: a late cancel changes nothing


def test_unreachable_account_is_retryable(settings):
    dead = {**settings, "port": fakesnow_server.free_port(), "login_timeout": 2}
    with pytest.raises(RetryableError, match="Snowflake status of query q1 failed"):
        adapter_for("snowflake", dead).poll(Handle(remote_id="q1"))


def test_missing_credentials_name_the_fields():
    with pytest.raises(ConfigError, match="missing user, password or private_key"):
        adapter_for("snowflake", {"account": "acme"})


def test_private_key_that_is_not_pem_or_a_file_is_a_config_error():
    adapter = SnowflakeAdapter({"account": "a", "user": "u", "private_key": "/no/such/key.p8"},
                               connect=lambda **kwargs: None)
    with pytest.raises(ConfigError, match="neither PEM text nor a readable file"):
        adapter.poll(Handle(remote_id="q1"))


def test_private_key_pem_reaches_the_connector_as_a_key_object():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    seen = {}
    fake = FakeConnection({"q1": "RUNNING"})
    SnowflakeAdapter({"account": "a", "user": "u", "private_key": pem},
                     connect=lambda **kw: seen.update(kw) or fake).poll(Handle(remote_id="q1"))
    assert seen["private_key"].private_numbers() == key.private_numbers()
    assert "password" not in seen


def test_the_private_key_is_read_once_per_adapter(monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    loads = []
    real = serialization.load_pem_private_key
    monkeypatch.setattr(serialization, "load_pem_private_key", lambda *a, **kw: loads.append(1) or real(*a, **kw))
    conn = FakeConnection({"new-query": "RUNNING"})
    adapter = SnowflakeAdapter({"account": "a", "user": "u", "private_key": pem}, connect=lambda **kw: conn)
    adapter.poll(adapter.submit(sub("SELECT 1")))  # two sessions: submit, then poll
    assert len(loads) == 1


def test_a_port_from_the_environment_reaches_the_connector_as_a_number():
    seen = {}
    settings = checked_settings("snowflake", {"account": "a", "user": "u", "password": "p", "port": "8765"})
    SnowflakeAdapter(settings, connect=lambda **kw: seen.update(kw) or FakeConnection({"q1": "RUNNING"})).poll(
        Handle(remote_id="q1"))
    assert seen["port"] == 8765


# ---- Boundary tests: a local server finishes every query at once and fails a bad statement at submit,
# so these drive the adapter's poll through a stand-in connection with the connector's own interface.

class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.sfqid = None

    def execute(self, sql, params=None):
        self.conn.executed.append((sql, params))
        self._rows = []  # no query history: a submit executes
        return self

    def execute_async(self, sql, params=None):
        self.conn.executed.append((sql, params))
        self.sfqid = "new-query"

    def fetchone(self):
        return self._rows[0] if self._rows else None


class FakeConnection:
    def __init__(self, statuses):
        self.statuses = statuses
        self.executed = []
        self.closed = False

    def cursor(self):
        return FakeCursor(self)

    def get_query_status(self, query_id):
        from snowflake.connector.constants import QueryStatus

        return QueryStatus[self.statuses[query_id]]

    def get_query_status_throw_if_error(self, query_id):
        from snowflake.connector.errors import ProgrammingError

        raise ProgrammingError(msg="Query was cancelled by user", errno=604, sfqid=query_id)

    def close(self):
        self.closed = True


def boundary_adapter(conn):
    return SnowflakeAdapter({"account": "a", "user": "u", "password": "p"}, connect=lambda **kw: conn)


@pytest.mark.parametrize(
    ("name", "state"),
    [("RUNNING", RemoteState.RUNNING), ("QUEUED", RemoteState.RUNNING), ("RESUMING_WAREHOUSE", RemoteState.RUNNING), ("NO_DATA", RemoteState.RUNNING),
     ("ABORTED", RemoteState.CANCELLED), ("FAILED_WITH_ERROR", RemoteState.FAILED), ("FAILED_WITH_INCIDENT", RemoteState.FAILED)],
)
def test_query_status_mapping(name, state):
    conn = FakeConnection({"q1": name})
    status = boundary_adapter(conn).poll(Handle(remote_id="q1"))
    assert status.state == state
    assert conn.closed  # short sessions: every call closes its connection
    assert status.retryable == name.startswith("FAILED")    # this failure is not the statement's fault


@pytest.mark.parametrize("message", [
    "SQL compilation error: syntax error line 1 at position 7 unexpected 'FORM'.",
    "SQL compilation error: Object 'NO_SUCH_TABLE' does not exist or not authorized.",
    "Insufficient privileges to operate on table 'ORDERS'",
])
def test_a_wrong_or_forbidden_statement_is_never_retried(message):
    assert not status_from_query("FAILED_WITH_ERROR", message).retryable
    assert status_from_query("FAILED_WITH_ERROR", "Warehouse 'WH' was suspended during the query").retryable


def test_failed_query_at_poll_keeps_the_message():
    status = boundary_adapter(FakeConnection({"q1": "FAILED_WITH_ERROR"})).poll(Handle(remote_id="q1"))
    assert status.message.endswith("Query was cancelled by user")
    assert status_from_query("RUNNING").message == "running"
