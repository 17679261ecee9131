"""The Tower runtime (`tower.runtime.Runtime`) the app's functions use: the one place the shell holds it.

The Functions Python v2 model hands a function its trigger's input and bindings, nothing of ours,
so the activities and triggers ask here (`current()`) instead of being given their collaborators.
Nothing else does: the library (`tower/`) takes them as parameters.

Who sets it:
- ``function_app.py`` sets the process's runtime (`install`) when the worker imports it: in Azure
  that is once per worker process, so every invocation shares one ledger, one set of adapters.
- The local engine (`tower.local.engine.Engine`) runs the app's functions with its own runtime, for
  its home, while it runs (`using`): tests start engines over many homes in one process, one after
  another or side by side (over one home), and each invocation must reach its engine's stores.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tower.runtime import Runtime

_lock = threading.Lock()
_installed: Runtime | None = None
_engines: list[Runtime] = []  # runtimes of the local engines running in this process, latest last


def install(runtime: Runtime) -> Runtime:
    """Make `runtime` this process's (function_app.py: the Azure composition root)."""
    global _installed
    with _lock:
        _installed = runtime
    return runtime


def using(runtime: Runtime) -> None:
    """A local engine starts: its functions use `runtime` until it stops (`done_with`)."""
    with _lock:
        _engines.append(runtime)


def done_with(runtime: Runtime) -> None:
    """A local engine stopped: the runtime it was `using` is no longer current."""
    with _lock:
        for at in range(len(_engines) - 1, -1, -1):
            if _engines[at] is runtime:
                del _engines[at]
                break


def current() -> Runtime:
    """The runtime of the running local engine (the latest started), else the process's."""
    with _lock:
        runtime = _engines[-1] if _engines else _installed
    if runtime is None:
        from tower.errors import ConfigError

        raise ConfigError("no Tower runtime here: function_app.py installs one when the Functions worker "
                          "loads it, and the local engine uses its own; call app_runtime.install(...) first")
    return runtime
