"""A local stand-in for the Databricks Jobs API 2.2, enough for the real databricks-sdk to talk to.

Each job has a script: the run states that successive ``runs/get`` calls walk through (the last one
sticks). ``run-now`` honours ``idempotency_token`` like Databricks (same token → same run);
``runs/cancel`` ends the run CANCELED; ``fail_next`` injects throttling / outage replies; ``end``
ends a run and calls the ``webhook`` (a job's notification destination).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/api/2.2/jobs"

# Ready-made scripts: (life_cycle_state, result_state, state_message) per poll.
SUCCEEDS = [("PENDING", None, "waiting for cluster"), ("RUNNING", None, ""), ("TERMINATED", "SUCCESS", "")]
FAILS = [("RUNNING", None, ""), ("TERMINATED", "FAILED", "Task ingest failed: ZeroDivisionError")]
TIMES_OUT = [("RUNNING", None, ""), ("TERMINATED", "TIMEDOUT", "Run timed out after 3600 s")]
SKIPS = [("SKIPPED", None, "An active run of this job already exists")]
BREAKS = [("RUNNING", None, ""), ("INTERNAL_ERROR", None, "Cluster terminated unexpectedly")]
RUNS_FOREVER = [("RUNNING", None, "")]


@dataclass
class Run:
    run_id: int
    job_id: int
    parameters: dict
    script: list
    polls: int = 0
    cancelled: bool = False

    def state(self) -> dict:
        if self.cancelled:
            life, result, message = "TERMINATED", "CANCELED", "Run cancelled by user"
        else:
            life, result, message = self.script[min(self.polls, len(self.script) - 1)]
            self.polls += 1
        state = {"life_cycle_state": life, "state_message": message}
        if result:
            state["result_state"] = result
        return state


@dataclass
class JobsApi:
    """The server's state; tests read it to check what the adapter asked for."""

    token: str
    jobs: dict[int, list] = field(default_factory=dict)
    runs: dict[int, Run] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    faults: list[tuple[str, int, str | None]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    resource_ids: list[str] = field(default_factory=list)  # X-Databricks-Azure-Workspace-Resource-Id seen
    lock: threading.Lock = field(default_factory=threading.Lock)
    notifications: dict[int, dict] = field(default_factory=dict)  # job id -> its webhook_notifications
    webhook: str | None = None  # the notification destination's URL, called on each end() (as Databricks does)
    task_level: bool = False  # the destination is set on the job's task, not on the job: task payloads
    notified: list[tuple[int, int]] = field(default_factory=list)  # (run id, HTTP status of the webhook's reply)

    def end(self, run_id: int, result: str = "SUCCESS") -> None:
        """End a run now (TERMINATED with `result`) and send the webhook notification, as a Databricks
        notification destination of type webhook does (docs.databricks.com, jobs/notifications, "HTTP
        webhook payloads"): a POST of {event_type, workspace_id, run: {run_id}, job: {job_id, name}}, or
        for a notification set on a task, {..., task: {task_key}, run: {run_id: the task run's id,
        parent_run_id: the job run's}}. Ids are sent as strings, as in Databricks' examples."""
        with self.lock:
            run = self.runs[run_id]
            run.script, run.polls = [("TERMINATED", result, "")], 0
        if self.webhook:
            event = "jobs.on_success" if result == "SUCCESS" else "jobs.on_failure"
            payload = {"event_type": event, "workspace_id": "1234567890", "run": {"run_id": str(run_id)},
                       "job": {"job_id": str(run.job_id), "name": f"job {run.job_id}"}}
            if self.task_level:
                payload.update(task={"task_key": "main"}, run={"run_id": str(run_id * 1000 + 1),
                                                               "parent_run_id": str(run_id)})
            body = json.dumps(payload).encode()
            request = urllib.request.Request(self.webhook, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    self.notified.append((run_id, reply.status))
            except urllib.error.HTTPError as exc:
                self.notified.append((run_id, exc.code))

    def fail_next(self, path: str, statuses: list[int], retry_after: str | None = "0") -> None:
        """The next requests to `path` (e.g. 'runs/get') answer these statuses, one each, in order."""
        with self.lock:
            self.faults.extend((f"{API}/{path}", status, retry_after) for status in statuses)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, {"error_code": code, "message": message})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        url = urlparse(self.path)
        with api.lock:
            api.requests.append((method, url.path))
            if self.headers.get("X-Databricks-Azure-Workspace-Resource-Id"):
                api.resource_ids.append(self.headers["X-Databricks-Azure-Workspace-Resource-Id"])
            fault = next((f for f in api.faults if f[0] == url.path), None)
            if fault:
                api.faults.remove(fault)
        if url.path == "/.well-known/databricks-config":
            return self._error(404, "NOT_FOUND", "no such endpoint")
        if self.headers.get("Authorization") != f"Bearer {api.token}":
            return self._error(401, "UNAUTHENTICATED", "Invalid access token.")
        if fault:
            _, status, retry_after = fault
            code = "TOO_MANY_REQUESTS" if status == 429 else "TEMPORARILY_UNAVAILABLE"
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return self._reply(status, {"error_code": code, "message": f"injected {status}"}, headers)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if method == "POST" else {}
        route = {
            ("POST", f"{API}/run-now"): self._run_now,
            ("GET", f"{API}/runs/get"): self._get_run,
            ("POST", f"{API}/runs/cancel"): self._cancel_run,
            ("GET", f"{API}/get"): self._get_job,
        }.get((method, url.path))
        if route is None:
            return self._error(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {url.path}'")
        route(body, parse_qs(url.query))

    def _run_now(self, body: dict, query: dict) -> None:
        api = self.server.api
        job_id = body.get("job_id")
        with api.lock:
            if job_id not in api.jobs:
                return self._error(400, "INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
            token = body.get("idempotency_token")
            if token and token in api.tokens:
                return self._reply(200, {"run_id": api.tokens[token], "number_in_job": api.tokens[token]})
            run_id = 1000 + len(api.runs)
            api.runs[run_id] = Run(run_id, job_id, dict(body.get("job_parameters") or {}), api.jobs[job_id])
            if token:
                api.tokens[token] = run_id
        self._reply(200, {"run_id": run_id, "number_in_job": run_id})

    def _get_job(self, body: dict, query: dict) -> None:
        job_id = (query.get("job_id") or [""])[0]
        with self.server.api.lock:
            if not job_id.isdigit() or int(job_id) not in self.server.api.jobs:
                return self._error(400, "INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
            settings = {"name": f"job {job_id}",
                        "webhook_notifications": self.server.api.notifications.get(int(job_id), {})}
        self._reply(200, {"job_id": int(job_id), "settings": settings})

    def _find(self, run_id) -> Run | None:
        run = self.server.api.runs.get(int(run_id)) if str(run_id).isdigit() else None
        if run is None:
            self._error(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist.")
        return run

    def _get_run(self, body: dict, query: dict) -> None:
        with self.server.api.lock:
            run = self._find((query.get("run_id") or [""])[0])
            if run is None:
                return
            state = run.state()
        host = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        self._reply(200, {
            "run_id": run.run_id,
            "job_id": run.job_id,
            "state": state,
            "run_page_url": f"{host}/#job/{run.job_id}/run/{run.run_id}",
        })

    def _cancel_run(self, body: dict, query: dict) -> None:
        with self.server.api.lock:
            run = self._find(body.get("run_id"))
            if run is None:
                return
            run.cancelled = True
        self._reply(200, {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: JobsApi


def start(token: str = "dapi-local-test-token") -> tuple[_Server, JobsApi]:
    """Start the server on a free 127.0.0.1 port in a thread; stop it with ``server.shutdown()``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.api = JobsApi(token=token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.api


def url_of(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


AMBIENT_AUTH = ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET",
                "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_AUTH_TYPE", "ARM_CLIENT_ID", "ARM_CLIENT_SECRET")


def without_ambient_auth(monkeypatch) -> None:
    """Unset the machine's Databricks credentials and config file: with them the SDK would see
    "more than one authorization method" beside the stand-in's token."""
    for name in AMBIENT_AUTH:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/databrickscfg")
