"""How the validator reads a Snowflake statement: what can hide a ';' or a '?'."""

import pytest

from tower.catalog.sql import shape


@pytest.mark.parametrize("sql, statements, placeholders", [
    ("SELECT 1", 1, 0),
    ("SELECT 1;", 1, 0),
    ("SELECT 1;  -- done\n", 1, 0),
    ("DELETE FROM t; INSERT INTO t SELECT 1", 2, 0),
    ("SELECT ';' AS semi, '?' AS q", 1, 0),
    ("SELECT 'it''s; fine', 'a\\'; b'", 1, 0),
    ('SELECT 1 AS "odd;name?"', 1, 0),
    ("CREATE FUNCTION f() RETURNS INT AS $$ SELECT 1; $$", 1, 0),
    ("SELECT 1 /* ; ? */ -- ; ?\n", 1, 0),
    ("SELECT 1 // ; ?\n", 1, 0),
    ("CALL load(?, ?)", 1, 2),
    ("-- only a comment", 0, 0),
    ("SELECT 1;;", 1, 0),
])
def test_statements_and_placeholders(sql, statements, placeholders):
    found = shape(sql)
    assert (found.statements, found.placeholders) == (statements, placeholders)


def test_python_placeholders_are_found_outside_strings_only():
    assert shape("CALL load(%(business_date)s)").pyformat == "%(business_date)s"
    assert shape("SELECT %s").pyformat == "%s"
    assert shape("SELECT '%(x)s', 'LIKE 50%s'").pyformat is None
    assert shape("SELECT amount % 10 FROM t").pyformat is None
