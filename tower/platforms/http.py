"""HTTP services with the asynchronous request-reply (202) pattern, or a plain synchronous call.

    submit: METHOD url (body + ``Idempotency-Key``) → 202 + Location   → poll the status URL
                                                   → 200/201            → done at once
    poll:   GET status URL → 202 (running) | 200 + a JSON status value | 303 (done, result elsewhere)
    cancel: cancel_method (status URL + cancel_path), when the service says how

A submit carries ``Tower-Callback: <url>`` when the app knows its public URL (tower.push): a service
may POST to it (any body) when the job ends, and Tower polls at once instead of at its next poll.

Platform settings: ``base_url``; optional ``headers`` (sent on every request; secret values via
``${VAR}``), ``auth: {audience, client_id?}`` (a bearer token from the app's Azure identity),
``timeout`` (s per request, default 30), ``max_retries`` (default 4) and ``max_retry_wait`` (s spent
waiting for 429/5xx inside one call, default 30; beyond it the call fails retryable and the
orchestration's backoff takes over).

Service fields: ``path`` (joined to base_url) or ``url``; ``method`` (default POST); ``headers`` (added
to the submit request only, so they never have to be kept in the handle); ``body`` (a JSON
object; the run params go in it as ``params`` unless it has its own); ``status_path`` (dotted path of
the status value in the JSON, default ``status``); ``success_values``, ``failure_values``,
``cancelled_values`` (compared case-insensitively; defaults below); ``cancel_path`` (appended to the
status URL, or an absolute URL) and ``cancel_method`` (default POST, or DELETE on the status URL when
only the method is given).
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from tower.errors import NonRetryableError, RetryableError
from tower.platforms._auth import Credentials
from tower.platforms.base import Handle, Status, Submission, tail
from tower.states import RemoteState

PLATFORM = "http"
log = logging.getLogger(__name__)

DEFAULT_SUCCESS = ("succeeded", "success", "completed", "complete", "done")
DEFAULT_FAILURE = ("failed", "failure", "error", "faulted")
DEFAULT_CANCELLED = ("cancelled", "canceled", "terminated")
CALLBACK_HEADER = "Tower-Callback"  # a URL the service may POST to when the job ends: Tower polls at once
STATUS_URL_HEADERS = ("Location", "Operation-Location", "Azure-AsyncOperation")
MESSAGE_FIELDS = ("error", "message", "detail", "reason")
RETRY_STATUSES = {408, 425, 429}  # and every 5xx
RULE_FIELDS = ("status_path", "success_values", "failure_values", "cancelled_values")
_URL_TAIL = re.compile(r"[?#][^\s'\"]*")  # a query or fragment inside some text, up to a space or quote


def safe_url(url: str) -> str:
    """The URL without query or fragment: those often carry keys (``?code=``, SAS tokens)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def safe_text(text: str, url: str) -> str:
    """Some text (an exception from requests) without the query or fragment of `url` in it, in
    whatever form it was written there (raw, percent-encoded, path-only)."""
    parts = urlsplit(url)
    for secret in (parts.query, parts.fragment):
        if secret:
            text = text.replace(secret, "")
    return _URL_TAIL.sub("", text)


def value_at(document: Any, path: str) -> Any:
    """`document` followed along a dotted path (``output.state``); None where it leads nowhere."""
    for step in path.split(".") if path else []:
        if isinstance(document, dict):
            document = document.get(step)
        elif isinstance(document, list) and step.isdigit() and int(step) < len(document):
            document = document[int(step)]
        else:
            return None
    return document


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class HttpAdapter:
    """One HTTP platform (a base URL, its headers and auth)."""

    def __init__(self, settings: dict[str, Any], *, credentials: Credentials | None = None):
        # Settings as adapter_for checked them: base_url set, numbers numeric, auth with an audience.
        self._settings = dict(settings)
        self._credentials = credentials or Credentials()  # for `auth`: Entra tokens
        self._timeout = float(settings.get("timeout", 30))
        self._max_retries = int(settings.get("max_retries", 4))
        self._max_retry_wait = float(settings.get("max_retry_wait", 30))
        self._session: Any = None

    # -- the three operations -------------------------------------------------------------

    def submit(self, submission: Submission) -> Handle:
        spec = submission.spec
        url = self._service_url(spec, submission.service)
        method = str(spec.get("method", "POST")).upper()
        body = None
        if method not in ("GET", "HEAD", "DELETE"):
            own = spec.get("body") or {}
            if not isinstance(own, dict):
                raise NonRetryableError(f"service {submission.service!r}: field 'body' must be a mapping",
                                        platform=PLATFORM)
            body = {"params": submission.params, **own}
        response = self._call(method, url, json_body=body, action=f"submit of service {submission.service!r}",
                              extra_headers={**{str(k): str(v) for k, v in (spec.get("headers") or {}).items()},
                                             "Idempotency-Key": submission.idempotency_key,
                                             **({CALLBACK_HEADER: submission.callback} if submission.callback else {})})
        document = _json(response)
        status_url = _status_url(response, document, url)
        status = self._status_from(response, document, spec)
        remote_id = str(value_at(document, "id") or safe_url(status_url or response.url))
        if response.status_code == 202 or not status.done:
            if not status_url:
                still = "" if response.status_code == 202 else f" and a status that is not final ({status.message[:100]})"
                raise NonRetryableError(
                    f"HTTP service {safe_url(url)} answered {response.status_code} without a Location header"
                    f"{still}: cannot follow it", platform=PLATFORM)
            log.info("service %s: HTTP job at %s", submission.service, safe_url(status_url))
            data = {"status_url": status_url, "rules": {k: spec[k] for k in RULE_FIELDS if k in spec}}
            if spec.get("cancel_path") or spec.get("cancel_method"):
                cancel_method = spec.get("cancel_method") or "POST"
                data["cancel"] = {"path": spec.get("cancel_path") or "", "method": str(cancel_method).upper()}
            return Handle(remote_id=remote_id, url=safe_url(status_url), data=data)
        # 200/201: the work is already done; poll will report this outcome without calling again.
        return Handle(remote_id=remote_id, data={"final": status.to_json()})

    def poll(self, handle: Handle) -> Status:
        if "final" in handle.data:
            return Status.from_json(handle.data["final"])
        url = handle.data["status_url"]
        response = self._call("GET", url, action=f"status of {handle.remote_id}")
        return self._status_from(response, _json(response), handle.data.get("rules", {}), handle)

    def cancel(self, handle: Handle) -> None:
        spec = handle.data.get("cancel") or {}
        if "final" in handle.data or not spec:
            log.info("HTTP job %s: no cancel endpoint configured, nothing to stop", handle.remote_id)
            return
        status_url = handle.data["status_url"]
        path = spec.get("path") or ""
        url = path if path.startswith(("http://", "https://")) else status_url.split("?")[0].rstrip("/") + path
        self._call(spec["method"], url, action=f"cancel of {handle.remote_id}", ok_statuses={404, 409, 410})

    # -- helpers ------------------------------------------------------------------------------

    def _service_url(self, spec: dict, service: str) -> str:
        if spec.get("url"):
            return str(spec["url"])
        if not spec.get("path"):
            raise NonRetryableError(f"service {service!r}: needs 'path' or 'url'", platform=PLATFORM)
        return self._settings["base_url"].rstrip("/") + "/" + str(spec["path"]).lstrip("/")

    def _status_from(self, response: Any, document: Any, rules: dict, handle: Handle | None = None) -> Status:
        """Read a response as a Status: 202 = running, 3xx = done, else the JSON status value."""
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        url = handle.url if handle else None
        if response.status_code == 202:
            return Status(RemoteState.RUNNING, url=url, poll_after=retry_after)
        if 300 <= response.status_code < 400:
            return Status(RemoteState.SUCCEEDED, url=url, output=f"result at {safe_url(response.headers.get('Location', ''))}")
        value = value_at(document, rules.get("status_path", "status"))
        text = tail(response.text or "")
        if value is None:
            return Status(RemoteState.SUCCEEDED, url=url, output=text)
        word = str(value).lower()

        def matches(field: str, default: tuple[str, ...]) -> bool:
            return word in {str(v).lower() for v in rules.get(field, default)}

        if matches("success_values", DEFAULT_SUCCESS):
            return Status(RemoteState.SUCCEEDED, url=url, output=text)
        if matches("failure_values", DEFAULT_FAILURE):
            # the job ran and failed: the service's retry policy decides (4xx answers never get here)
            return Status(RemoteState.FAILED, message=_message(document, value), url=url, output=text, retryable=True)
        if matches("cancelled_values", DEFAULT_CANCELLED):
            return Status(RemoteState.CANCELLED, message=_message(document, value), url=url, output=text)
        return Status(RemoteState.RUNNING, message=str(value), url=url, poll_after=retry_after)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        headers.update({str(k): str(v) for k, v in (self._settings.get("headers") or {}).items()})
        auth = self._settings.get("auth")
        if auth:
            token = self._credentials.bearer_token(auth["audience"], client_id=auth.get("client_id"),
                                                   platform=PLATFORM)
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _call(self, method: str, url: str, *, action: str, json_body: Any = None,
              extra_headers: dict | None = None, ok_statuses: set[int] = frozenset()) -> Any:
        """One request with bounded retries on 429/5xx/network errors; 4xx fails at once."""
        import requests

        if self._session is None:
            self._session = requests.Session()
        headers = {**self._headers(), **(extra_headers or {})}
        where = f"{method} {safe_url(url)}"
        waited = 0.0
        for attempt in range(self._max_retries + 1):
            delay = min(0.5 * 2**attempt, 8.0)
            try:
                response = self._session.request(method, url, json=json_body, headers=headers,
                                                 timeout=self._timeout, allow_redirects=False)
            except requests.ConnectionError as exc:
                problem = f"HTTP {action}: {where} failed: {type(exc).__name__}: {safe_text(str(exc), url)}"
                reason = _not_connected(exc)
                if reason:  # nothing was sent: no point in waiting here; the service's retries decide
                    raise RetryableError(f"HTTP {action}: {where} failed: {reason}", platform=PLATFORM) from None
            except requests.RequestException as exc:
                problem = f"HTTP {action}: {where} failed: {type(exc).__name__}: {safe_text(str(exc), url)}"
            else:
                code = response.status_code
                if code < 400 or code in ok_statuses:
                    return response
                problem = f"HTTP {action}: {where} answered {code}: {tail(response.text or '', 300)}"
                if code not in RETRY_STATUSES and code < 500:
                    raise NonRetryableError(problem, platform=PLATFORM)
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                if asked is not None:
                    delay = asked
            if attempt == self._max_retries or waited + delay > self._max_retry_wait:
                break
            log.info("%s: retrying in %.1f s (%s)", where, delay, problem.split(": ", 2)[-1][:80])
            time.sleep(delay)
            waited += delay
        raise RetryableError(problem, platform=PLATFORM)


def _not_connected(exc: BaseException) -> str | None:
    """Why the request never left (the connection was refused, or the host has no address), or None.
    Retrying at once, a second later, does not help then; Tower's retries (with their backoff) may."""
    from urllib.parse import urlsplit

    import urllib3.exceptions

    request = getattr(exc, "request", None)
    parts = urlsplit(getattr(request, "url", "") or "")
    host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    cause: BaseException | None = exc
    for _ in range(10):  # requests wraps urllib3's MaxRetryError, which wraps the socket's error
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {host} (is the service running, on that port?)"
        if isinstance(cause, urllib3.exceptions.NameResolutionError):
            return f"no address for host {parts.hostname!r} (is the name right?)"
        if isinstance(cause, urllib3.exceptions.MaxRetryError):
            cause = cause.reason
        elif cause is not None and (cause.__cause__ or cause.__context__):
            cause = cause.__cause__ or cause.__context__
        elif cause is not None and cause.args and isinstance(cause.args[0], BaseException):
            cause = cause.args[0]
        else:
            return None
    return None


def _json(response: Any) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _status_url(response: Any, document: Any, request_url: str) -> str | None:
    for header in STATUS_URL_HEADERS:
        if response.headers.get(header):
            return urljoin(request_url, response.headers[header])
    found = value_at(document, "statusQueryGetUri")  # Durable Functions' HTTP starter
    return urljoin(request_url, found) if isinstance(found, str) else None


def _message(document: Any, value: Any) -> str:
    for field in MESSAGE_FIELDS:
        found = value_at(document, field)
        if found:
            return found if isinstance(found, str) else json.dumps(found)[:300]
    return f"service reported {value}"
