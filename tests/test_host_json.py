"""host.json holds the production values docs/architecture.md explains, and every app setting the
app reads through a binding expression is in README's configuration table."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tower.stores import TABLE_SETTINGS

REPO = Path(__file__).resolve().parents[1]
HOST = json.loads((REPO / "host.json").read_text())


def _seconds(span: str) -> int:
    hours, minutes, seconds = (int(part) for part in span.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def test_durable_settings_are_the_production_ones():
    durable = HOST["extensions"]["durableTask"]
    assert 2 <= _seconds(durable["storageProvider"]["maxQueuePollingInterval"]) <= 10  # default 30 s
    assert durable["storageProvider"]["partitionCount"] == 16                             # default 4, max 16
    assert durable["maxConcurrentOrchestratorFunctions"] >= 32
    assert HOST["logging"]["logLevel"]["Host.Triggers.DurableTask"] == "Warning"


def test_each_host_json_value_is_explained_in_the_architecture_doc():
    doc = (REPO / "docs" / "architecture.md").read_text()
    durable = HOST["extensions"]["durableTask"]
    for key, value in [*durable["storageProvider"].items(), *((k, v) for k, v in durable.items() if k != "storageProvider")]:
        assert re.search(rf"`[\w.]*{key}` \| `{re.escape(str(value))}`", doc), key


def test_every_app_setting_the_app_reads_is_in_the_readme_configuration_table():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Configuration"):]
    table = table[: table.index("\n## ", 1)]
    settings = set(re.findall(r"%(\w+)%", (REPO / "host.json").read_text()))
    from tower.events import QUEUE_SETTING

    settings |= {QUEUE_SETTING, *TABLE_SETTINGS}
    for name in sorted(settings):
        assert f"| `{name}` |" in table, name
