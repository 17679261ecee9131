"""Planning a wide run against the run history in Table Storage (Azurite): how long `plan_run` takes
for N services that each have a few recorded successes (its history reads are most of it).

Starts Azurite (node_modules/.bin/azurite-table, or $AZURITE) on a free port, records the history,
then times `plan_run` (median of --repeat). Azurite answers in well under a millisecond; Table
Storage in Azure takes tens of milliseconds a query, so what grows with N there is the number of
round trips made one after another.

usage: python benchmarks/bench_history.py [--services 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_orchestration import catalog_for  # noqa: E402

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's


def azurite() -> tuple[subprocess.Popen, str]:
    binary = os.environ.get("AZURITE") or str(HERE.parent / "node_modules/.bin/azurite-table")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--silent", "--inMemoryPersistence", "--disableTelemetry",
                             "--skipApiVersionCheck", "--tableHost", "127.0.0.1", "--tablePort", str(port)],
                            cwd=tempfile.mkdtemp(prefix="azurite-"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/{ACCOUNT}"
        except OSError:
            if time.monotonic() > deadline:
                proc.terminate()
                raise SystemExit("Azurite did not start") from None
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    from azure.core.credentials import AzureNamedKeyCredential

    from tower.runner import plan_run
    from tower.runs import history

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    proc, account = azurite()
    try:
        url = f"{account}/history{uuid.uuid4().hex[:8]}"
        store = history.TableRunHistory(url, credential=AzureNamedKeyCredential(ACCOUNT, KEY))
        deps = {f"s{i:05d}": [] for i in range(args.services)}
        store.record_many({"run_id": f"old-{k}", "service": name, "status": "succeeded", "attempt": 1,
                           "started": 1_700_000_000.0 + k, "finished": 1_700_000_010.0 + k}
                          for name in deps for k in range(3))
        history.history_from_environment = lambda home=None: store  # plan_run asks it for the store
        catalog = catalog_for(deps, dict.fromkeys(deps, 1.0), None)
        times = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            plan = plan_run(catalog, "bench")
            times.append(time.perf_counter() - began)
        assert all(svc["expected"] == 10.0 for svc in plan["services"].values())
        print(f"plan_run of {args.services} services with Table history (Azurite): median "
              f"{statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)})")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
