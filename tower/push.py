"""Push completion: which service run a platform's notification is about.

A platform that can call Tower when its work ends (a Databricks job's webhook notification, an
HTTP service's callback) names only its own run. The submit writes, keyed by that name, the service
run to wake (`remember`); the notification route reads it (`find`) and raises `REMOTE_ENDED_EVENT`
on that `service_run`, which then polls at once instead of at its next timer. A notification is
never trusted: it only makes the service run look, and the platform says what happened. A
notification that names nothing Tower submitted is refused. Polling stays the safety net: a lost
notification costs latency, nothing else (docs/architecture.md, "Push completion").

Where the keys live: a table of their own in the runs index's store (SQLite `push.db` under
$TOWER_HOME locally; in Azure the runs table, TOWER_RUNS_TABLE_URL, partition `~push`), so no new
setting or resource. Registers no functions.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tower.stores import SqliteStore, Table, location

log = logging.getLogger("tower.push")

DATABRICKS = "databricks"
HTTP = "http"
PARTITION = "~push"   # in the runs table: no run id starts with "~" (tower.runs.plan.is_safe_instance_id)


def key(kind: str, remote_id: str) -> str:
    return f"{kind}:{remote_id}"


def new_token() -> str:
    """An unguessable name for an HTTP service's callback URL (`Tower-Callback`)."""
    return secrets.token_urlsafe(18)


class SqlitePushIndex(SqliteStore):
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS push (key TEXT PRIMARY KEY, target TEXT NOT NULL, recorded REAL NOT NULL)",
    )

    def put(self, key: str, target: dict) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO push (key, target, recorded) VALUES (?, ?, ?)",
                       (key, json.dumps(target), time.time()))

    def get(self, key: str) -> dict | None:
        row = self._connect().execute("SELECT target FROM push WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def delete_before(self, cutoff: datetime) -> int:
        """Forget the keys written before `cutoff` (retention: their service runs ended long ago)."""
        with self._connect() as db:
            return db.execute("DELETE FROM push WHERE recorded < ?", (cutoff.timestamp(),)).rowcount


class TablePushIndex:
    def __init__(self, table_url: str, credential: Any = None):
        self._table = Table(table_url, credential)

    def put(self, key: str, target: dict) -> None:
        from azure.data.tables import UpdateMode

        from tower.runs.ledger_table import partition_key

        self._table.ready().upsert_entity({"PartitionKey": PARTITION, "RowKey": partition_key(key), **target,
                                           "recorded": time.time()}, mode=UpdateMode.REPLACE)

    def get(self, key: str) -> dict | None:
        from azure.core.exceptions import ResourceNotFoundError

        from tower.runs.ledger_table import partition_key

        try:
            entity = self._table.ready().get_entity(PARTITION, partition_key(key))
        except ResourceNotFoundError:
            return None
        return {name: entity.get(name) for name in ("instance_id", "run_id", "service")}

    def delete_before(self, cutoff: datetime) -> int:
        """Forget the keys written before `cutoff`: one query in the `~push` partition, deletes in
        batches of 100 (one partition per transaction)."""
        table = self._table.ready()
        old = [entity["RowKey"] for entity in table.query_entities(
            "PartitionKey eq @pk and recorded lt @cutoff", parameters={"pk": PARTITION, "cutoff": cutoff.timestamp()},
            select=["RowKey"])]
        for start in range(0, len(old), 100):
            table.submit_transaction([("delete", {"PartitionKey": PARTITION, "RowKey": row_key})
                                      for row_key in old[start:start + 100]])
        return len(old)


def index_from_environment(home: str | Path | None = None):
    """A new push index: the runs table in Azure, else ``push.db`` under `home` (default $TOWER_HOME).
    A process keeps one (`tower.runtime.Runtime.push_keys`)."""
    kind, where = location("TOWER_RUNS_TABLE_URL", "push.db", home)
    return TablePushIndex(where) if kind == "table" else SqlitePushIndex(where)


def callback_base(env=None) -> str | None:
    """The app's API base URL, for callback URLs: TOWER_CALLBACK_URL, else the one Azure gives the
    app (WEBSITE_HOSTNAME, the app's default host name: EnvironmentSettingNames in
    Azure/azure-functions-host); `tower serve` sets TOWER_CALLBACK_URL to where it listens. None: no
    callbacks (polling only)."""
    env = os.environ if env is None else env
    if env.get("TOWER_CALLBACK_URL"):
        return env["TOWER_CALLBACK_URL"].rstrip("/")
    if env.get("WEBSITE_HOSTNAME"):
        return f"https://{env['WEBSITE_HOSTNAME']}/api"
    return None


def callback_for(keys, run_id: str, service: str) -> str | None:
    """A callback URL for one submit to an HTTP service, its token noted first (a callback may come
    as soon as the work ends); None when the app has no public URL or the note failed."""
    base = callback_base()
    if base is None:
        return None
    token = new_token()
    return f"{base}/notify/http/{token}" if remember(keys, HTTP, token, run_id, service) else None


def remember(keys, kind: str, remote_id: str, run_id: str, service: str) -> bool:
    """Note in `keys` (a push index) that `remote_id` (a Databricks run id, an HTTP callback token) is
    `service` of `run_id`.
    Best effort: a key that could not be written costs only latency (the service run polls)."""
    from tower.runs.plan import service_instance_id

    target = {"instance_id": service_instance_id(run_id, service), "run_id": run_id, "service": service}
    try:
        keys.put(key(kind, str(remote_id)), target)
    except Exception as exc:
        log.warning("%s/%s: could not note a %s run for push completion, polling only: %s",
                    run_id, service, kind, exc)
        return False
    return True


def find(keys, kind: str, remote_id: str) -> dict | None:
    """{instance_id, run_id, service} of the service run that submitted `remote_id` (from `keys`, a
    push index), or None."""
    return keys.get(key(kind, str(remote_id)))
