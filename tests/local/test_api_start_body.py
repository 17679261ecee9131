"""`POST /api/runs/{pipeline}` on the local host: misspelled keys and unknown params are a 400."""

from tests.local.test_host_app_triggers import call, host  # noqa: F401 (fixture)


def test_misspelled_keys_and_unknown_params_are_refused_and_start_nothing(host):  # noqa: F811
    status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"param": {"day": "2026-11-24"}, "service": ["load"]})
    assert status == 400 and "unknown field 'param' (did you mean 'params'?)" in reply["error"]
    status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"params": {"dya": "2026-11-24"}})
    assert status == 400 and "unknown param 'dya'" in reply["error"]
    assert call(host, "GET", "/api/runs")[1]["runs"] == []


def test_a_defaulted_secret_never_reaches_an_instance_input(host, tmp_path):  # noqa: F811
    import os
    from pathlib import Path

    catalog = Path(os.environ["TOWER_CATALOG"])
    text = catalog.read_text().replace("platforms:\n", """platforms:
  warehouse: {type: snowflake, account: acme, user: tower, password: "${WH_PASSWORD:-hunter2}"}
""", 1).replace("services:\n", "services:\n  query: {platform: warehouse, sql: SELECT 1}\n", 1)
    catalog.write_text(text.replace("services: [extract, load]", "services: [extract, load, query]"))
    os.utime(catalog, (1, 1))  # a different mtime, whatever the clock's resolution
    status, reply, _ = call(host, "POST", "/api/runs/adhoc", {})
    assert status == 500 and "a secret has a default written in the catalog" in reply["error"]
    assert "hunter2" not in reply["error"]
    home = tmp_path / "home"
    assert [p for p in home.rglob("*") if p.is_file() and b"hunter2" in p.read_bytes()] == []
