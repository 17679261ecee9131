"""The start endpoint's body is read strictly: a misspelled key never starts a run with defaults."""

import pytest

from tower.errors import UsageError
from tower.run_request import StartRequest, parse_start_body


def test_a_well_formed_body():
    assert parse_start_body({"params": {"day": "d1"}, "services": ["+load"], "run_id": "r-1"}) == \
        StartRequest({"day": "d1"}, ["+load"])
    assert parse_start_body({}) == parse_start_body(None) == StartRequest(None, None)


@pytest.mark.parametrize("body, message", [
    ({"param": {"day": "d1"}}, "unknown field 'param' (did you mean 'params'?)"),
    ({"service": ["load"]}, "unknown field 'service' (did you mean 'services'?)"),
    ({"colour": "red"}, "unknown field 'colour' (known fields: params, services, run_id)"),
    ([1, 2], "expected a JSON object"),
    ({"params": ["day=d1"]}, "field 'params' must be an object"),
    ({"services": "load"}, "field 'services' must be a list of selectors"),
    ({"services": [1]}, "field 'services' must be a list of selectors"),
])
def test_a_bad_body_is_refused_with_what_to_write(body, message):
    with pytest.raises(UsageError) as caught:
        parse_start_body(body)
    assert message in str(caught.value)
