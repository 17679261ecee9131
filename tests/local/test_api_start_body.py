"""`POST /api/runs/{pipeline}` on the local host: misspelled keys and unknown params are a 400."""

from tests.local.test_host_app_triggers import call, host  # noqa: F401 (fixture)


def test_misspelled_keys_and_unknown_params_are_refused_and_start_nothing(host):  # noqa: F811
    status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"param": {"day": "2026-11-24"}, "service": ["load"]})
    assert status == 400 and "unknown field 'param' (did you mean 'params'?)" in reply["error"]
    status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"params": {"dya": "2026-11-24"}})
    assert status == 400 and "unknown param 'dya'" in reply["error"]
    assert call(host, "GET", "/api/runs")[1] == []
