"""Where log records and Python warnings go while a `tower` command runs.

Tower's own warnings are for the person at the terminal: one line each, ``warning: ...``, written
to stderr at the moment they happen (so the progress display, which redirects stderr, prints them
above its line instead of being broken by them). Libraries' records and warnings (the Durable SDK's
"Potential duplicate Task completion", a connector's retries, deprecations) are for whoever debugs
Tower: they go to ``$TOWER_HOME/tower.log``, never to the terminal, except errors.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

OWN = ("tower", "triggers", "activities", "orchestrators", "function_app")
LOG_FILE = "tower.log"


class _Terminal(logging.Handler):
    """stderr as it is at each record (the progress display swaps it), for Tower's own records and
    anyone's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".", 1)[0] in OWN
        return (own and record.levelno >= logging.WARNING) or (
            record.levelno >= logging.ERROR and record.name not in ("py.warnings", "asyncio"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:  # a closed stderr must not turn a warning into a crash
            self.handleError(record)


class _Library(logging.FileHandler):
    """Everything else at WARNING and above, in $TOWER_HOME/tower.log (opened at the first record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] not in OWN and record.levelno >= logging.WARNING

    def _open(self):
        import os

        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        return super()._open()


@contextmanager
def command_logging():
    """Route records and warnings as described above for the duration of one command."""
    from tower.paths import tower_home

    library = _Library(tower_home() / LOG_FILE, delay=True, encoding="utf-8")
    library.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers = [_Terminal(), library]
    root = logging.getLogger()
    for handler in handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
