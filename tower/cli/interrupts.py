"""Ctrl-C and SIGTERM mean the same to a command that follows a run: cancel it, wait, report.

CI jobs and cron time out with SIGTERM, people press Ctrl-C; both should leave the run cancelled
and its remote work stopped, not an orphaned engine. Exit codes follow the shell's convention for a
process ended by a signal: 130 (SIGINT) and 143 (SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""


def exit_code(interrupt: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises Terminated in the main thread (as SIGINT raises KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
