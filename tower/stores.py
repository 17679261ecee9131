"""What the run history and the run ledger share: where each lives (SQLite under $TOWER_HOME
locally, an Azure Table in Azure), their SQLite connections and their Table clients."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tower.errors import ConfigError
from tower.paths import tower_home

IN_AZURE = "WEBSITE_INSTANCE_ID"  # set by App Service / Functions on every instance


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
    if os.environ.get(IN_AZURE):
        raise ConfigError(f"{setting} is not set: in Azure, Tower keeps this store in Table Storage; set it "
                          "to https://<account>.table.core.windows.net/<table> and give the app's identity "
                          "the 'Storage Table Data Contributor' role on the account")
    return "sqlite", str((Path(home) if home else tower_home()).absolute() / filename)


def sqlite_connection(local: threading.local, path: Path) -> sqlite3.Connection:
    """This thread's connection to a store's SQLite file, in WAL mode (readers never wait for the
    writer, and a killed process loses nothing committed)."""
    db = getattr(local, "db", None)
    if db is None:
        db = sqlite3.connect(path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        local.db = db
    return db


class Table:
    """A Table Storage table reached with DefaultAzureCredential (managed identity in Azure; set
    AZURE_CLIENT_ID for a user-assigned one) unless given another credential (tests pass Azurite's
    account key). Created on first use."""

    def __init__(self, table_url: str, credential: Any = None):
        from azure.data.tables import TableClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
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
