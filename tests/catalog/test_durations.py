import pytest

from tower.catalog import format_duration, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("1d2h3m4s", 93784),
     ("1.5h", 5400), (" 45S ", 45), ("0s", 0), ("120", 120), (90, 90), (2.5, 2.5), (0, 0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10 minutes", "5x", "m", "30m1h", "1h 30m", "-5s", "1hh"])
def test_bad_duration_strings_say_how_to_write_one(text):
    with pytest.raises(ValueError, match=r"invalid duration .*e\.g\. 90s, 15m, 2h, 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, None, [1]])
def test_bad_duration_values(value):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    "seconds, text",
    [(5400, "1h30m"), (45, "45s"), (2.5, "2.5s"), (0, "0s"), (90061, "1d1h1m1s"), (3600, "1h"), (59.6, "1m"),
     (-90, "-1m30s")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["1m30s", "1h30m", "1d1h1m1s", "45s"])
def test_format_and_parse_round_trip(text):
    assert format_duration(parse_duration(text)) == text
