"""adapter_for checks resolved platform settings once, for every platform: required fields, numbers."""

from __future__ import annotations

import pytest

from tests.platforms.test_http_details import server  # noqa: F401  (the fixture)
from tower.catalog.env import resolve
from tower.errors import ConfigError
from tower.platforms import adapter_for, checked_settings
from tower.platforms.base import param_text


@pytest.mark.parametrize(
    ("ptype", "settings", "words"),
    [
        ("databricks", {"token": "t"}, "databricks platform: missing host"),
        ("http", {"base_url": ""}, "http platform: missing base_url"),
        ("snowflake", {"account": "acme"}, "snowflake platform: missing user, password or private_key"),
    ],
)
def test_a_missing_required_setting_names_the_platform_type_and_field(ptype, settings, words):
    with pytest.raises(ConfigError, match=words):
        adapter_for(ptype, settings)


def test_a_reference_that_resolves_empty_counts_as_missing():
    settings = resolve({"base_url": "${SCORING_URL:-}"}, environ={})
    with pytest.raises(ConfigError, match="http platform: missing base_url"):
        adapter_for("http", settings)


def test_number_settings_from_the_environment_become_numbers():
    settings = resolve({"base_url": "http://x", "timeout": "${T}", "max_retries": "${R}"}, environ={"T": "2.5", "R": "3"})
    checked = checked_settings("http", settings)
    assert (checked["timeout"], checked["max_retries"]) == (2.5, 3)
    assert type(checked["max_retries"]) is int
    port = checked_settings("snowflake", {"account": "a", "user": "u", "password": "p", "port": " 8765 "})["port"]
    assert port == 8765 and type(port) is int
    assert "timeout" not in checked_settings("http", {"base_url": "http://x", "timeout": ""})  # ${T:-}: default


@pytest.mark.parametrize(
    ("ptype", "settings", "field"),
    [
        ("http", {"base_url": "http://x", "timeout": "abc"}, "timeout"),
        ("databricks", {"host": "h", "retry_timeout": "soon"}, "retry_timeout"),
        ("snowflake", {"account": "a", "user": "u", "password": "p", "port": "http"}, "port"),
        ("sim", {"time_scale": "-1"}, "time_scale"),
        ("command", {"kill_grace": True}, "kill_grace"),
    ],
)
def test_a_setting_that_is_not_a_number_is_a_config_error_naming_it(ptype, settings, field):
    with pytest.raises(ConfigError, match=f"{ptype} platform: setting '{field}' must be a number >= 0"):
        adapter_for(ptype, settings)


def test_param_text_is_json_for_everything_but_strings():
    assert [param_text(v) for v in ("2024-01-01", True, 3, 1.5, None, {"a": 1}, [1, "b"])] == \
        ["2024-01-01", "true", "3", "1.5", "null", '{"a": 1}', '[1, "b"]']


def test_numbers_as_numbers_stay_and_zero_is_a_number():
    checked = checked_settings("http", {"base_url": "http://x", "timeout": 3, "max_retries": "0", "max_retry_wait": 0.5})
    assert (checked["timeout"], checked["max_retries"], checked["max_retry_wait"]) == (3, 0, 0.5)


def test_an_empty_number_setting_leaves_the_next_one_checked():
    checked = checked_settings("http", {"base_url": "http://x", "max_retries": "", "timeout": "5"})
    assert "max_retries" not in checked and checked["timeout"] == 5


def test_a_platform_type_with_no_required_settings_needs_none():
    assert checked_settings("sim", {}) == {} and checked_settings("command", {"kill_grace": "1"}) == {"kill_grace": 1}


@pytest.mark.parametrize("auth", [{"client_id": "c"}, "managed_identity"])
def test_http_auth_needs_an_audience(auth):
    with pytest.raises(ConfigError) as caught:
        checked_settings("http", {"base_url": "http://x", "auth": auth})
    assert str(caught.value) == "http platform: 'auth' needs an 'audience' (the app id URI of the service)"
    assert checked_settings("http", {"base_url": "http://x", "auth": {"audience": "api://x"}})["auth"] == {
        "audience": "api://x"}
    assert checked_settings("databricks", {"host": "h", "auth": "managed_identity"})["auth"] == "managed_identity"


def test_an_unknown_platform_type_lists_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        adapter_for("spark", {})
    assert str(caught.value) == "unknown platform type 'spark' (use one of: sim, command, databricks, snowflake, http)"


def test_an_override_stands_in_for_a_platform_type_as_a_factory_or_as_an_adapter():
    from tower.platforms import Platforms
    from tower.platforms.base import FunctionAdapter

    class CallableAdapter(FunctionAdapter):
        def __call__(self, *args):
            raise AssertionError("an adapter is used as it is, never called as a factory")

    adapter = CallableAdapter(submit=lambda s: None, poll=lambda h: None)
    made = []
    platforms = Platforms({"databricks": adapter, "snowflake": lambda settings: made.append(settings) or adapter})
    assert platforms.adapter("databricks", {}) is adapter
    assert platforms.adapter("snowflake", {"account": "a"}) is adapter and made == [{"account": "a"}]
    assert platforms.adapter("sim", {}) is platforms.adapter("sim", {})              # kept per type and settings


def test_adapters_that_fetch_tokens_get_the_registrys_credentials_and_the_checked_settings(server):  # noqa: F811
    """One token cache for every adapter of a process: an http adapter the registry builds asks the
    registry's `Credentials` (not a credential of its own) and takes its settings as checked."""
    from tests.platforms.test_http_details import answer, submission
    from tower.platforms import Platforms
    from tower.platforms._auth import Credentials

    asked = []

    class Credential:
        def __init__(self, client_id):
            self.client_id = client_id

        def get_token(self, scope):
            asked.append((self.client_id, scope))
            return type("Token", (), {"token": f"t-{self.client_id}"})()

    platforms = Platforms(credentials=Credentials(make=Credential))
    answer(server, "POST", "/start", (200, {}, {"status": "done"}))
    settings = {"base_url": server.base, "max_retries": "", "auth": {"audience": "api://x", "client_id": "c1"}}
    adapter = platforms.adapter("http", settings)
    assert adapter.poll(adapter.submit(submission({"path": "/start"}))).state == "succeeded"
    assert server.seen[0][2]["Authorization"] == "Bearer t-c1" and asked == [("c1", "api://x/.default")]


def test_the_registry_keeps_one_adapter_per_type_and_settings_and_drops_the_least_recently_used():
    from tower.platforms import KEPT_ADAPTERS, Platforms

    platforms = Platforms()
    first = [platforms.adapter("sim", {"time_scale": n + 1}) for n in range(KEPT_ADAPTERS)]
    assert len({id(adapter) for adapter in first}) == KEPT_ADAPTERS                    # settings tell them apart
    assert all(platforms.adapter("sim", {"time_scale": n + 1}) is first[n] for n in range(KEPT_ADAPTERS))
    two = {"time_scale": 2, "fail_attempts": 1}
    assert platforms.adapter("sim", two) is platforms.adapter("sim", dict(reversed(two.items())))  # order aside
    newest = platforms.adapter("sim", {"time_scale": 0.5})     # one too many: the least recently used go
    assert platforms.adapter("sim", {"time_scale": 0.5}) is newest
    assert platforms.adapter("sim", {"time_scale": KEPT_ADAPTERS}) is first[-1]
    assert platforms.adapter("sim", {"time_scale": 3}) is first[2]
    assert platforms.adapter("sim", {"time_scale": 1}) is not first[0]


def test_a_command_adapter_keeps_its_files_under_the_registrys_home(tmp_path, monkeypatch):
    from tower.platforms import Platforms

    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "elsewhere"))
    adapter = Platforms(home=tmp_path / "home").adapter("command", {"kill_grace": "2"})
    assert (adapter.home, adapter.kill_grace) == ((tmp_path / "home").resolve(), 2.0)
    assert adapter_for("command", {}, home=str(tmp_path)).home == tmp_path.resolve()
    assert Platforms().adapter("command", {}).home == (tmp_path / "elsewhere").resolve()  # no home: $TOWER_HOME
    assert adapter_for("sim", {"time_scale": "0.5"}).time_scale == 0.5
