"""What Tower's stores (run history, run ledger, rejected events...) share: where each lives (SQLite under $TOWER_HOME
locally, an Azure Table in Azure), their SQLite connections and their Table clients."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tower.errors import ConfigError
from tower.paths import tower_home

# Variables the platform sets on Azure hosts, read off Azure/azure-functions-host
# (EnvironmentExtensions.cs and its tests): App Service plans (Dedicated, Premium, Windows
# Consumption) set WEBSITE_INSTANCE_ID; every Functions plan sets WEBSITE_SKU (Dynamic,
# ElasticPremium, FlexConsumption...); Flex Consumption runs in "Legion" containers WITHOUT
# WEBSITE_INSTANCE_ID but with WEBSITE_SKU=FlexConsumption and LEGION_SERVICE_HOST; Kubernetes and
# Container Apps hosting set WEBSITE_POD_NAME / CONTAINER_APP_NAME. CONTAINER_NAME alone proves
# nothing (plenty of container runtimes set it). Core Tools (`func start` on a laptop) sets
# FUNCTIONS_CORETOOLS_ENVIRONMENT: local, whatever else is set.
AZURE_MARKERS = ("WEBSITE_INSTANCE_ID", "WEBSITE_SKU", "LEGION_SERVICE_HOST", "WEBSITE_POD_NAME", "CONTAINER_APP_NAME")
CORE_TOOLS = "FUNCTIONS_CORETOOLS_ENVIRONMENT"


def azure_marker(env: Mapping[str, str] | None = None) -> str | None:
    """The variable that shows this process runs on an Azure host (any plan), or None (a laptop,
    `tower serve`, Core Tools)."""
    env = os.environ if env is None else env
    if env.get(CORE_TOOLS, "").lower() == "true":
        return None
    return next((name for name in AZURE_MARKERS if env.get(name)), None)


# Every store Tower keeps in Table Storage in Azure: setting -> what it holds.
TABLE_SETTINGS = {
    "TOWER_LEDGER_TABLE_URL": "the run ledger",
    "TOWER_HISTORY_TABLE_URL": "run history",
    "TOWER_REJECTED_TABLE_URL": "rejected events",
    "TOWER_RUNS_TABLE_URL": "the runs index",
}


def require_tables(env: Mapping[str, str] | None = None) -> None:
    """On an Azure host, every table setting must be there: one ConfigError naming all that are
    missing, raised when the app loads (so it stops at once instead of failing run by run)."""
    env = os.environ if env is None else env
    marker = azure_marker(env)
    missing = [f"{name} ({what})" for name, what in TABLE_SETTINGS.items() if not env.get(name)]
    if marker and missing:
        raise ConfigError(f"this is an Azure host ({marker} is set) but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set: Tower keeps these in Table Storage "
                          "there (a SQLite file would be one per instance). Set each to "
                          "https://<account>.table.core.windows.net/<table> and give the app's identity the "
                          "'Storage Table Data Contributor' role on the account")


def location(setting: str, filename: str, home: str | Path | None = None) -> tuple[str, str]:
    """("table", url) when `setting` names a table; else ("sqlite", path) under `home` (default
    $TOWER_HOME). In Azure a SQLite file would be per instance (and the app folder read-only), so
    the table setting is required there."""
    url = os.environ.get(setting)
    if url:
        if urlsplit(url).query:
            raise ConfigError(f"{setting}: give the table URL without a query string (no SAS token): "
                              "Tower reaches Table Storage with the app's managed identity")
        return "table", url
    marker = azure_marker()
    if marker:
        raise ConfigError(f"{setting} is not set, and this is an Azure host ({marker} is set): a SQLite "
                          "file here would be one per instance. Set it to "
                          "https://<account>.table.core.windows.net/<table> and give the app's identity "
                          "the 'Storage Table Data Contributor' role on the account")
    return "sqlite", str((Path(home) if home else tower_home()).absolute() / filename)


def sqlite_connection(local: threading.local, path: Path) -> sqlite3.Connection:
    """This thread's connection to a store's SQLite file, in WAL mode (readers never wait for the
    writer, and a killed process loses nothing committed)."""
    db = getattr(local, "db", None)
    if db is None:
        db = sqlite3.connect(path, timeout=30)
        _enable_wal(db)
        db.execute("PRAGMA synchronous=NORMAL")
        local.db = db
    return db


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch a new file to WAL. The switch takes an exclusive lock without waiting on the busy
    timeout, so connections opening a fresh file at once (the first requests after a start) get
    SQLITE_BUSY: wait a little and try again."""
    for delay in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, None):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY or delay is None:
                raise
            time.sleep(delay)


class SqliteStore:
    """A store kept in one SQLite file (WAL, a connection per thread, shared by processes): the
    local form of each Table store. Subclasses list the statements that create their tables."""

    SCHEMA: tuple[str, ...] = ()

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.location = str(self.path.absolute())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            for statement in self.SCHEMA:
                db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        return sqlite_connection(self._local, self.path)


class Table:
    """A Table Storage table reached with the app's identity (`tower.identity`: managed identity in
    Azure, AZURE_CLIENT_ID naming the user-assigned one) unless given another credential (tests pass Azurite's
    account key). Created on first use."""

    def __init__(self, table_url: str, credential: Any = None):
        from azure.data.tables import TableClient

        if credential is None:
            from tower.identity import azure_credential

            credential = azure_credential()
        self.client = TableClient.from_table_url(table_url, credential=credential)
        self._created = False

    def ready(self):
        """The client, the table created if it was not there."""
        if not self._created:
            from azure.core.exceptions import ResourceExistsError

            try:
                self.client.create_table()
            except ResourceExistsError:
                pass
            self._created = True
        return self.client
