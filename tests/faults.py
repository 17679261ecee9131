"""Store outages injected where they happen: in the run ledger a runtime hands to the app's functions.

A test that needs the ledger to fail (a Table 503, SQLite's "database is locked") gives the engine a
runtime whose ledger is the real one behind a `FaultyLedger`, and names the calls that fail. The
code under test meets the failure where it would meet it in Azure, at a store call, with every
caller (report, reconcile, cancel-flag read) on its real path.

    RuntimeWithFaults(home)            a `tower.runtime.Runtime` whose `.ledger` is a FaultyLedger
      .ledger_faults                   its FaultyLedger
    FaultyLedger(real)                 the real ledger; every call passes through unless a fault says
      .fail(method, error, times=1, skip=0, when=None) -> Fault
      .clear()                         no more faults (a fixture's teardown)
    ends(service), run_is(run_id)      `when` conditions for `save` and for any call naming the run
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tower.runtime import Runtime
from tower.states import FINISHED_STATES


@dataclass
class Fault:
    """`error` raised by the calls to `method` that satisfy `when` (given the call's arguments), after
    letting the first `skip` of them through, `times` times. `seen` and `failed` count those calls."""

    method: str
    error: BaseException
    times: int = 1
    skip: int = 0
    when: Callable[..., bool] | None = None
    seen: int = 0
    failed: int = 0

    def strikes(self, args: tuple, kwargs: dict) -> bool:
        if self.when is not None and not self.when(*args, **kwargs):
            return False
        self.seen += 1
        if self.seen <= self.skip or self.failed >= self.times:
            return False
        self.failed += 1
        return True


class FaultyLedger:
    """A run ledger (`tower.runs.ledger.RunLedger`) that is the real one, except where a `Fault` makes
    a call raise before it reaches the store (so it writes nothing). Its scheduler cache and its
    dispatches are the real ledger's: the process still has one ledger."""

    def __init__(self, real):
        self.real = real
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def fail(self, method: str, error: BaseException, *, times: int = 1, skip: int = 0,
             when: Callable[..., bool] | None = None) -> Fault:
        if not callable(getattr(self.real, method, None)):
            raise AttributeError(f"the ledger has no method {method!r} to fail")
        fault = Fault(method, error, times, skip, when)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def __getattr__(self, name: str):
        attribute = getattr(self.real, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            with self._lock:
                struck = next((f for f in self._faults if f.method == name and f.strikes(args, kwargs)), None)
            if struck is not None:
                raise struck.error
            return attribute(*args, **kwargs)

        return call


class RuntimeWithFaults(Runtime):
    """A runtime whose ledger fails where a test says (`ledger_faults`, a FaultyLedger over the ledger
    the runtime would build): hand it to an engine (``Engine(app, home, runtime=...)``)."""

    def __init__(self, home, **options):
        super().__init__(home, **options)
        self.ledger_faults = FaultyLedger(super().ledger)

    @property
    def ledger(self) -> FaultyLedger:
        return self.ledger_faults


def ends(service: str) -> Callable[..., bool]:
    """For `save`: a save that records `service` ended (a report of its end, or the reconcile's)."""

    def recording_its_end(run_id, version, meta, records, *rest, **kwargs) -> bool:
        record = records.get(service)
        return record is not None and record.get("status") in FINISHED_STATES

    return recording_its_end


def run_is(run_id: str) -> Callable[..., bool]:
    """For any call whose first argument is the run id (`meta`, `load`, `save`, `version`, ...)."""
    return lambda first=None, *rest, **kwargs: first == run_id
