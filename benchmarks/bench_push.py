"""Push completion: a Databricks job's webhook notification -> its dependent submitted.

Runs the real app (function_app.py) under the local host with a Databricks stand-in whose jobs
end when told to and then call the app's POST /api/notify/databricks, as a job with a webhook
notification destination does. Two jobs in a chain, each expected to take 20 minutes, so the
service run's next poll is minutes away and only the push can make it look sooner. After the
first has been idle `--idle` seconds (the backend's idle backoff grows meanwhile), it ends; the
figure is the time from the end (the webhook sent) to the second job's run-now. Per latency
profile of the local host (tower.local.latency, host.json's parameters) and number of workers.
Real seconds: nothing is time-scaled here.

usage: python benchmarks/bench_push.py [--idle 12] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from tests.platforms import jobs_api_server as jobs  # noqa: E402
from tower.events import EVENTS_QUEUE  # noqa: E402
from tower.local.host import Host, load_app  # noqa: E402

TOKEN = "dapi-bench-push"
CATALOG = """
platforms:
  dbx: {type: databricks, host: "${BENCH_PUSH_DBX_HOST}", token: "${BENCH_PUSH_DBX_TOKEN}"}
services:
  ingest: {platform: dbx, job_id: 41, expected_duration: 20m}
  report: {platform: dbx, job_id: 42, expected_duration: 20m, depends_on: [ingest]}
pipelines:
  nightly: {services: [ingest, report]}
"""
CASES = (("none", 1), ("azure-storage", 1), ("azure-storage", 4), ("durable-task-scheduler", 1))


def _run_of(api, job_id: int, seconds: float = 30.0) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with api.lock:
            found = next((run.run_id for run in api.runs.values() if run.job_id == job_id), None)
        if found is not None:
            return found
        time.sleep(0.002)
    raise RuntimeError(f"job {job_id} was not submitted within {seconds} s")


def once(profile: str, workers: int, idle: float) -> float:
    import json
    import urllib.request

    server, api = jobs.start(TOKEN)
    api.jobs[41] = api.jobs[42] = jobs.RUNS_FOREVER
    with tempfile.TemporaryDirectory() as home:
        catalog = Path(home) / "catalog.yaml"
        catalog.write_text(textwrap.dedent(CATALOG))
        os.environ.update({"TOWER_CATALOG": str(catalog), "TOWER_HOME": home, "TOWER_EVENTS_QUEUE": EVENTS_QUEUE,
                           "BENCH_PUSH_DBX_HOST": jobs.url_of(server), "BENCH_PUSH_DBX_TOKEN": TOKEN,
                           "DATABRICKS_CONFIG_FILE": "/nonexistent/databrickscfg",
                           "TOWER_LOCAL_LATENCY": profile, "TOWER_LOCAL_LATENCY_WORKERS": str(workers)})
        host = Host(load_app(HERE.parent / "function_app.py"), home, port=0, log=lambda line: None).start()
        try:
            api.webhook = f"{host.base_url}/api/notify/databricks"
            request = urllib.request.Request(f"{host.base_url}/api/runs/nightly", data=b"{}", method="POST")
            json.loads(urllib.request.urlopen(request, timeout=15).read())
            ingest = _run_of(api, 41)
            time.sleep(idle)
            ended = time.monotonic()
            api.end(ingest)
            _run_of(api, 42)
            return time.monotonic() - ended
        finally:
            host.stop()
            server.shutdown()
            server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=12.0, help="seconds the first job runs before it ends")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("PROFILE", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "TOWER_API_KEY", "TOWER_RUNS_TABLE_URL",
                 "TOWER_LEDGER_TABLE_URL", "TOWER_HISTORY_TABLE_URL", "TOWER_REJECTED_TABLE_URL"):
        os.environ.pop(name, None)
    if args.one:   # one host per process: the Durable client's session belongs to one event loop
        print(f"{once(args.one[0], int(args.one[1]), args.idle):.4f}")
        return
    print(f"### Push completion: webhook sent -> dependent submitted, real seconds, after {args.idle:g} s idle\n")
    print("| profile | workers | median s | max s | runs |")
    print("|---|---|---|---|---|")
    for profile, workers in CASES:
        times = []
        for _ in range(args.repeat):
            child = subprocess.run([sys.executable, __file__, "--idle", str(args.idle), "--one", profile, str(workers)],
                                   capture_output=True, text=True, check=True)
            times.append(float(child.stdout.strip().splitlines()[-1]))
        print(f"| {profile} | {workers} | {statistics.median(times):.2f} | {max(times):.2f} | {len(times)} |", flush=True)


if __name__ == "__main__":
    main()
