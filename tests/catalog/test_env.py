import pytest

from tower.catalog.env import references, resolve, syntax_error
from tower.errors import ConfigError


def test_resolve_replaces_references_recursively():
    value = {"url": "https://${HOST}/api", "headers": {"Authorization": "Bearer ${TOKEN}"},
             "list": ["${A:-one}", 3], "literal": "$${NOT_A_VAR}", "sql": "select $$x$$, $1"}
    environ = {"HOST": "example.com", "TOKEN": "t0k"}
    assert resolve(value, environ) == {
        "url": "https://example.com/api", "headers": {"Authorization": "Bearer t0k"},
        "list": ["one", 3], "literal": "${NOT_A_VAR}", "sql": "select $$x$$, $1",
    }


def test_default_is_used_when_unset_or_empty_and_empty_is_kept_without_default():
    assert resolve("${A:-d}", {}) == "d"
    assert resolve("${A:-d}", {"A": ""}) == "d"
    assert resolve("${A}", {"A": ""}) == ""
    assert resolve("${A:-}", {}) == ""


def test_unset_variable_names_field_and_variable_but_no_value():
    with pytest.raises(ConfigError) as caught:
        resolve({"headers": {"X-Key": "${API_KEY}"}}, {"OTHER": "secret-value"}, where="platform 'api'")
    assert str(caught.value) == (
        "platform 'api' field 'headers.X-Key': environment variable API_KEY is not set"
        " (export it)"
    )


def test_resolve_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("TOWER_TEST_VAR", "here")
    assert resolve("${TOWER_TEST_VAR}") == "here"


def test_bad_syntax_at_use_is_a_config_error():
    with pytest.raises(ConfigError, match=r"service 'x' field 'sql': unclosed '\$\{'"):
        resolve({"sql": "select ${X"}, {}, where="service 'x'")


@pytest.mark.parametrize(
    "text, message",
    [("${A", "unclosed '${'"), ("${}", "empty variable name"), ("${1A}", "invalid variable name '1A'"),
     ("${A:b}", "write ${A} or ${A:-default}"), ("x ${A-b} y", "bad reference '${A-b}'")],
)
def test_syntax_errors(text, message):
    assert message in syntax_error(text)


@pytest.mark.parametrize("text", ["plain", "${A}", "a${B:-x y}c${C}", "$${A", "$$ and $1", "${A:-}"])
def test_good_syntax(text):
    assert syntax_error(text) is None


def test_references_lists_variable_names():
    assert references({"a": "${A} ${B:-x}", "b": ["$${C}", "${D}"], "c": 3}) == ["A", "B", "D"]
