"""Where Tower's stores live, and that no Azure plan ever falls back to a per-instance SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tower.errors import ConfigError
from tower.stores import TABLE_SETTINGS, azure_marker, location, require_tables

REPO = Path(__file__).resolve().parents[1]

# What each Azure plan sets (Azure/azure-functions-host EnvironmentExtensions and its tests).
PLANS = {
    "flex consumption": {"WEBSITE_SKU": "FlexConsumption", "CONTAINER_NAME": "c1", "LEGION_SERVICE_HOST": "1",
                         "WEBSITE_SITE_NAME": "tower"},  # no WEBSITE_INSTANCE_ID there
    "flex, before specialization": {"CONTAINER_NAME": "c1", "LEGION_SERVICE_HOST": "1"},
    "linux consumption": {"WEBSITE_SKU": "Dynamic", "CONTAINER_NAME": "c1"},
    "elastic premium": {"WEBSITE_SKU": "ElasticPremium", "WEBSITE_INSTANCE_ID": "abc"},
    "container apps": {"CONTAINER_APP_NAME": "tower", "WEBSITE_POD_NAME": "tower-1"},
}
LOCAL = {
    "a laptop": {},
    "a container that is not Azure": {"CONTAINER_NAME": "ci-runner"},
    "core tools (func start)": {"FUNCTIONS_CORETOOLS_ENVIRONMENT": "true", "WEBSITE_SITE_NAME": "tower",
                                "WEBSITE_SKU": "Dynamic"},
}


@pytest.mark.parametrize("plan", PLANS)
def test_every_azure_plan_is_detected_and_a_missing_table_is_one_clear_error(plan, monkeypatch, tmp_path):
    assert azure_marker(PLANS[plan])
    for name in ("WEBSITE_INSTANCE_ID", "WEBSITE_SKU", "LEGION_SERVICE_HOST", "WEBSITE_POD_NAME",
                 "CONTAINER_APP_NAME", "FUNCTIONS_CORETOOLS_ENVIRONMENT", *TABLE_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    for name, value in PLANS[plan].items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="TOWER_LEDGER_TABLE_URL is not set, and this is an Azure host"):
        location("TOWER_LEDGER_TABLE_URL", "ledger.db", tmp_path)
    assert not list(tmp_path.iterdir())  # no SQLite file was made
    with pytest.raises(ConfigError) as error:
        require_tables(PLANS[plan])
    for name in TABLE_SETTINGS:  # every missing setting in the one message
        assert name in str(error.value)


@pytest.mark.parametrize("where", LOCAL)
def test_elsewhere_stores_are_sqlite_files_under_tower_home(where, tmp_path):
    assert azure_marker(LOCAL[where]) is None
    require_tables(LOCAL[where])  # nothing required


def test_with_every_table_set_azure_needs_nothing_else():
    require_tables({**PLANS["flex consumption"], **{name: "https://a.table.core.windows.net/t" for name in TABLE_SETTINGS}})


def test_the_app_refuses_to_load_on_flex_without_its_tables():
    env = {k: v for k, v in os.environ.items() if k not in TABLE_SETTINGS}
    env.update(PLANS["flex consumption"], TOWER_EVENTS_QUEUE="tower-events")
    done = subprocess.run([sys.executable, "-c", "import function_app"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ConfigError: this is an Azure host (WEBSITE_SKU is set) but TOWER_LEDGER_TABLE_URL" in done.stderr
