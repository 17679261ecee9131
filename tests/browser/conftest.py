"""Browser tests run in Debian's headless `chromium` (tests/browser/ensure_chromium.sh installs it;
`make test` calls that). Without Chromium they do not pass silently: each is skipped with the
reason, a pytest warning says so, and the end of the run says it in capitals."""

from __future__ import annotations

import warnings

import pytest

from tests.browser.cdp import Browser, find_chromium

NOT_RUN: list[str] = []


@pytest.fixture(scope="session")
def chromium() -> str:
    executable = find_chromium()
    if executable is None:
        reason = ("browser tests NOT RUN: no chromium (run tests/browser/ensure_chromium.sh as root, "
                  "or set TOWER_CHROMIUM)")
        NOT_RUN.append(reason)
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    return executable


@pytest.fixture
def browser(chromium):
    opened = Browser(chromium)
    try:
        yield opened
    finally:
        opened.close()


def pytest_terminal_summary(terminalreporter):
    if NOT_RUN:
        terminalreporter.section("BROWSER TESTS DID NOT RUN", sep="!", red=True, bold=True)
        terminalreporter.write_line(NOT_RUN[0], red=True, bold=True)
