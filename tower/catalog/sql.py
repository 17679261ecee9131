"""What the validator can tell about a Snowflake statement without a server: how many statements
the text holds, how many ``?`` placeholders, and whether it uses Python's ``%(name)s`` style.

A Snowflake service runs one statement (``execute_async`` refuses several unless told how many, and
a multi-statement request cannot be re-attached by its query tag), so two statements are a catalog
error, found at once instead of at the first submit. The scan knows Snowflake's lexical rules that
can hide a ``;`` or a ``?``: '...' strings (with '' and \\' escapes), "quoted identifiers", $$...$$
strings, -- and // line comments, /* block comments */.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PYFORMAT = re.compile(r"%\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)s|%s")


@dataclass(frozen=True)
class SqlShape:
    statements: int  # non-empty statements, separated by ';'
    placeholders: int  # '?' outside strings and comments
    pyformat: str | None  # the first %(name)s or %s outside strings and comments, if any


def shape(sql: str) -> SqlShape:
    statements, placeholders, pyformat = 0, 0, None
    pending = False  # code seen since the last ';'
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        two = sql[i : i + 2]
        if c in "'\"":
            i = _skip_quoted(sql, i, c)
            pending = True
            continue
        if two == "$$":
            end = sql.find("$$", i + 2)
            i = n if end < 0 else end + 2
            pending = True
            continue
        if two in ("--", "//"):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if two == "/*":
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if c == ";":
            statements += pending
            pending = False
        elif c == "?":
            placeholders += 1
            pending = True
        elif c == "%" and pyformat is None and (match := _PYFORMAT.match(sql, i)):
            pyformat = match.group(0)
            pending = True
        elif not c.isspace():
            pending = True
        i += 1
    return SqlShape(statements + pending, placeholders, pyformat)


def _skip_quoted(sql: str, start: int, quote: str) -> int:
    """The index after the string or identifier opened at ``start``."""
    i = start + 1
    while i < len(sql):
        c = sql[i]
        if c == "\\" and quote == "'":
            i += 2
            continue
        if c == quote:
            if sql[i + 1 : i + 2] == quote:  # '' (or "") is an escaped quote
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)
