"""A local HTTP service with the 202 pattern (aiohttp, in a background thread), for the HTTP adapter.

    POST /jobs            body {"outcome": "succeed"|"fail", "polls": N, "params": {...}}
                          → 202, Location: /jobs/<id> (same Idempotency-Key → same job)
    GET  /jobs/<id>       → 202 {"state": {"phase": "running"}} for N polls, then
                          200 {"state": {"phase": "done"|"failed"|"cancelled"}, "error"?: ...}
    POST /jobs/<id>/cancel, POST /sync (→ 200 at once), and `faults` to inject 429/5xx replies.
    A submit's ``Tower-Callback`` URL is kept; ``finish(job id)`` ends the job and calls it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Job:
    id: str
    outcome: str
    polls_left: int
    params: dict
    cancelled: bool = False
    callback: str | None = None  # the submit's Tower-Callback URL


@dataclass
class ServiceState:
    jobs: dict[str, Job] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    faults: list[tuple[str, int, str | None]] = field(default_factory=list)  # (path, status, Retry-After)
    seen: list[tuple[str, str, dict]] = field(default_factory=list)  # (method, path, headers)
    required_header: tuple[str, str] | None = None
    retry_after: str = "2"   # the Retry-After of a running job's status
    called_back: list[tuple[str, int]] = field(default_factory=list)  # (job id, HTTP status of the callback's reply)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))


def _app(state: ServiceState) -> web.Application:
    @web.middleware
    async def record_and_inject(request: web.Request, handler):
        state.seen.append((request.method, request.path, dict(request.headers)))
        if state.required_header:
            name, value = state.required_header
            if request.headers.get(name) != value:
                return web.json_response({"error": "missing or wrong credentials"}, status=401)
        fault = next((f for f in state.faults if f[0] == request.path), None)
        if fault:
            state.faults.remove(fault)
            headers = {"Retry-After": fault[2]} if fault[2] is not None else {}
            return web.json_response({"error": f"injected {fault[1]}"}, status=fault[1], headers=headers)
        return await handler(request)

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers.get("Idempotency-Key")
        if key and key in state.by_key:
            job_id = state.by_key[key]
        else:
            job_id = f"job-{next(state.ids)}"
            state.jobs[job_id] = Job(job_id, body.get("outcome", "succeed"), int(body.get("polls", 1)),
                                     body.get("params", {}), callback=request.headers.get("Tower-Callback"))
            if key:
                state.by_key[key] = job_id
        return web.json_response({"id": job_id}, status=202, headers={"Location": f"/jobs/{job_id}"})

    async def status(request: web.Request) -> web.Response:
        job = state.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": "no such job"}, status=404)
        if job.cancelled:
            return web.json_response({"id": job.id, "state": {"phase": "cancelled"}})
        if job.polls_left > 0:
            job.polls_left -= 1
            return web.json_response({"id": job.id, "state": {"phase": "running"}}, status=202,
                                     headers={"Retry-After": state.retry_after})
        if job.outcome == "fail":
            return web.json_response({"id": job.id, "state": {"phase": "failed"}, "error": "disk full on node 3"})
        return web.json_response({"id": job.id, "state": {"phase": "done"}, "rows": 42})

    async def cancel(request: web.Request) -> web.Response:
        job = state.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": "no such job"}, status=404)
        job.cancelled = True
        return web.json_response({"id": job.id}, status=202)

    async def sync(request: web.Request) -> web.Response:
        return web.json_response({"status": "done", "rows": 3}, status=200)

    app = web.Application(middlewares=[record_and_inject])
    app.add_routes([web.post("/jobs", create), web.get("/jobs/{id}", status),
                    web.post("/jobs/{id}/cancel", cancel), web.post("/sync", sync)])
    return app


class AsyncHttpService:
    """Runs the service on 127.0.0.1 (free port) in its own thread and event loop."""

    def __init__(self) -> None:
        self.state = ServiceState()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> AsyncHttpService:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(_app(self.state), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def finish(self, job_id: str) -> None:
        """End a job now (its next status is final) and call its submit's Tower-Callback, if any."""
        job = self.state.jobs[job_id]
        job.polls_left = 0
        if job.callback:
            request = urllib.request.Request(job.callback, data=b"{}", method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    self.state.called_back.append((job_id, reply.status))
            except urllib.error.HTTPError as exc:
                self.state.called_back.append((job_id, exc.code))

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
