"""Databricks jobs through databricks-sdk: run_now → get_run → cancel_run.

Platform settings: ``host``; ``token`` (a PAT, from ``${VAR}``) or ``auth: managed_identity`` (the
app's Azure identity; optional ``client_id`` of a user-assigned identity, ``azure_resource_id`` of the
workspace); optional ``retry_timeout`` (seconds the SDK keeps retrying 429/503/network errors inside
one call, default 60) and ``http_timeout`` (seconds per request, default 30).

Service fields: ``job_id`` (int), optional ``job_parameters`` (mapping). Run params are passed as
job parameters too (run params win); every value is sent as a string, as the Jobs API wants
(``param_text``: strings as they are, anything else as JSON).

Idempotency: ``run_now`` carries ``idempotency_token`` = the submission key, so a retried submit
(after a crash or a lost reply) returns the run already started instead of starting another.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from tower.errors import NonRetryableError, RetryableError
from tower.platforms._auth import AZURE_DATABRICKS_AUDIENCE, Credentials
from tower.platforms.base import (
    Handle,
    Status,
    Submission,
    param_text,
)
from tower.states import RemoteState

PLATFORM = "databricks"
log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_TOKEN = 64  # the Jobs API's limit

# life_cycle_state values that mean "not finished yet".
_ACTIVE = {"PENDING", "QUEUED", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY"}

# result_state of a TERMINATED run → (state, retryable). Anything unknown is a non-retryable failure.
# A run that ran and failed (or hit the job's own timeout) is retried under the service's policy, as
# Databricks' own job retries do; a disabled job or an upstream task's failure is not the run's fault.
_RESULTS = {
    "SUCCESS": (RemoteState.SUCCEEDED, False),
    "SUCCESS_WITH_FAILURES": (RemoteState.SUCCEEDED, False),
    "FAILED": (RemoteState.FAILED, True),
    "TIMEDOUT": (RemoteState.FAILED, True),
    "CANCELED": (RemoteState.CANCELLED, False),
    "EXCLUDED": (RemoteState.SKIPPED, False),
    "UPSTREAM_FAILED": (RemoteState.FAILED, False),
    "UPSTREAM_CANCELED": (RemoteState.CANCELLED, False),
    "MAXIMUM_CONCURRENT_RUNS_REACHED": (RemoteState.FAILED, True),
    "DISABLED": (RemoteState.FAILED, False),
}


def idempotency_token(key: str) -> str:
    """The submission key when it fits the API's 64 characters, else its SHA-256 (same key → same token)."""
    return key if len(key) <= MAX_IDEMPOTENCY_TOKEN else hashlib.sha256(key.encode()).hexdigest()


def status_from_run(life_cycle: str | None, result: str | None, message: str, url: str | None) -> Status:
    """Map the Jobs API's two-level run state onto Tower's states."""
    life_cycle = life_cycle or "PENDING"
    if life_cycle in _ACTIVE:
        return Status(RemoteState.RUNNING, message=message, url=url)
    if life_cycle == "SKIPPED":
        return Status(RemoteState.SKIPPED, message=message or "run skipped by Databricks", url=url)
    if life_cycle == "INTERNAL_ERROR":
        # The platform broke, not the job: another attempt may well succeed.
        return Status(RemoteState.FAILED, message=message or "Databricks internal error", retryable=True, url=url)
    if life_cycle == "TERMINATED" and result in _RESULTS:
        state, retryable = _RESULTS[result]
        text = message or ("" if state == RemoteState.SUCCEEDED else f"run ended {result}")
        if result == "TIMEDOUT" and "timed out" not in text.lower():
            text = f"run timed out (the job's own timeout): {text}"
        return Status(state, message=text, retryable=retryable, url=url)
    return Status(RemoteState.FAILED, message=message or f"run ended in state {life_cycle}/{result}", url=url)


class _ManagedIdentity:
    """databricks-sdk credentials strategy: a fresh (cached) Entra token on every request."""

    def __init__(self, credentials: Credentials, client_id: str | None, resource_id: str | None):
        self._credentials = credentials
        self._client_id = client_id
        self._resource_id = resource_id

    def auth_type(self) -> str:
        return "tower-managed-identity"

    def __call__(self, cfg: Any):
        def headers() -> dict[str, str]:
            token = self._credentials.bearer_token(AZURE_DATABRICKS_AUDIENCE, client_id=self._client_id,
                                                   platform=PLATFORM)
            result = {"Authorization": f"Bearer {token}"}
            if self._resource_id:  # lets a not-yet-provisioned identity be added to the workspace
                result["X-Databricks-Azure-Workspace-Resource-Id"] = self._resource_id
            return result

        return headers


class DatabricksAdapter:
    """One Databricks workspace. The SDK client is built on first use (importing it costs ~1.5 s)."""

    def __init__(self, settings: dict[str, Any], *, credentials: Credentials | None = None):
        self._settings = dict(settings)  # as adapter_for checked them: host set, numbers numeric
        self._credentials = credentials or Credentials()  # for auth: managed_identity
        self._client: Any = None

    def _workspace(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        s = self._settings
        common = {
            "host": s["host"],
            "retry_timeout_seconds": int(s.get("retry_timeout", 60)),
            "http_timeout_seconds": float(s.get("http_timeout", 30)),
        }
        if s.get("token") and s.get("auth") != "managed_identity":
            config = Config(token=s["token"], auth_type="pat", **common)
        else:
            strategy = _ManagedIdentity(self._credentials, s.get("client_id"), s.get("azure_resource_id"))
            config = Config(credentials_strategy=strategy, **common)
        return WorkspaceClient(config=config)

    def submit(self, submission: Submission) -> Handle:
        spec = submission.spec
        job_id = _job_id(spec.get("job_id"), submission.service)
        parameters = {k: param_text(v) for k, v in {**(spec.get("job_parameters") or {}), **submission.params}.items()}
        with _translated(f"run-now of job {job_id} for service {submission.service!r}"):
            waiter = self._workspace().jobs.run_now(
                job_id,
                job_parameters=parameters or None,
                idempotency_token=idempotency_token(submission.idempotency_key),
            )
        run_id = waiter.response.run_id
        log.info("service %s: Databricks job %s run %s", submission.service, job_id, run_id)
        return Handle(remote_id=str(run_id))

    def webhooks(self, job_id: int) -> dict[str, set[str]]:
        """The notification destinations a job calls on success and on failure (jobs.get):
        {"on_success": {id...}, "on_failure": {id...}}; push completion needs Tower's in both."""
        with _translated(f"get of job {job_id}"):
            job = self._workspace().jobs.get(job_id)
        hooks = job.settings.webhook_notifications if job.settings else None
        return {event: {hook.id for hook in (getattr(hooks, event, None) or []) if hook.id}
                for event in ("on_success", "on_failure")}

    def poll(self, handle: Handle) -> Status:
        with _translated(f"get_run of run {handle.remote_id}"):
            run = self._workspace().jobs.get_run(int(handle.remote_id))
        state = run.state
        life_cycle = state.life_cycle_state.value if state and state.life_cycle_state else None
        result = state.result_state.value if state and state.result_state else None
        message = (state.state_message or "") if state else ""
        return status_from_run(life_cycle, result, message, run.run_page_url or handle.url)

    def cancel(self, handle: Handle) -> None:
        from databricks.sdk.errors import NotFound

        try:
            with _translated(f"cancel_run of run {handle.remote_id}"):
                self._workspace().jobs.cancel_run(int(handle.remote_id))
        except NonRetryableError as exc:
            if isinstance(exc.__cause__, NotFound):  # already gone: nothing left to stop
                return
            raise


def _job_id(value: Any, service: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise NonRetryableError(
            f"service {service!r}: field 'job_id' must be a Databricks job id (a number), got {value!r}",
            platform=PLATFORM,
        ) from None


class _translated:
    """Turn SDK and network exceptions into Tower's retryable / non-retryable errors, message kept."""

    def __init__(self, action: str):
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, (RetryableError, NonRetryableError)):
            return False
        import requests
        from databricks.sdk import errors

        transient = (
            errors.TooManyRequests,
            errors.TemporarilyUnavailable,
            errors.InternalError,
            errors.DeadlineExceeded,
            errors.ResourceExhausted,
            errors.Aborted,
        )
        text = f"Databricks {self._action} failed: {exc}"
        if isinstance(exc, transient) or isinstance(exc, (TimeoutError, requests.RequestException)):
            if isinstance(exc, TimeoutError) and exc.__cause__ is not None:
                text = f"Databricks {self._action} kept failing until the retry timeout: {exc.__cause__}"
            raise RetryableError(text, platform=PLATFORM) from exc
        if isinstance(exc, (errors.DatabricksError, ValueError)):
            raise NonRetryableError(text, platform=PLATFORM) from exc
        return False
