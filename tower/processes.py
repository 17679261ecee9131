"""Whether a process on this machine is still there: the local host's leases, the dispatch grace
(`tower.runs.ledger.Dispatches.may_still_dispatch`), `tower status`'s "no engine attached" and the command
platform all ask it."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (one owned by another user counts; a zombie too:
    the command platform tells those apart itself)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
