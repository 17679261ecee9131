"""The frozen plan of one run: everything `pipeline_run` needs, decided before it starts.

A run is started with a plan, never with the catalog, so a catalog edit cannot change or break an
in-flight run. The plan is plain JSON (small keys, still readable)::

    {"v": 1, "run_id", "pipeline", "params", "created",
     "services": {name: {"platform", "deps", "timeout", "retry": {retries, backoff, max_backoff},
                         "expected", "spec", "params", "iid", "expect": {median, spread} | null}},
     "platforms": {name: {"type", "max_concurrency", "settings",
                          "poll": {first, factor, max, linger, scale}}}}

Platform settings and service specs keep their ``${VAR}`` references: the activities read them,
at use (the plan is stored in the run's history).
``iid`` is the instance id of the service's ``service_run`` orchestration (started by the run ledger's
activities, see tower.runs.ledger). An optional ``reconcile_after`` (seconds, default 60) sets when
`pipeline_run` first reconciles a run that is still going (tests shorten it).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from tower import graph
from tower.catalog.checks import did_you_mean
from tower.catalog.model import Catalog, RetryPolicy
from tower.contracts import PlatformEntry, ServiceJob
from tower.errors import UsageError
from tower.polling import Expectation, expectation_from_estimate, expectation_from_history
from tower.timestamps import iso

PLAN_VERSION = 1
MAX_INSTANCE_ID = 100
_FORBIDDEN_IN_ID = re.compile(r"[/\\#?\x00-\x1f\x7f]")
# Poll cadence when the platform does not say when to look again: 1 s, x1.5 each time, at most 60 s.
POLL_FIRST, POLL_FACTOR, POLL_MAX = 1.0, 1.5, 60.0
# Work that ends within this many seconds of the first look at it is watched by that submit or poll
# activity itself (see activities.remote.linger): a durable timer would cost more than the wait.
POLL_LINGER = 0.5
MIN_SIM_POLL = 0.01  # seconds: a simulated run polls no faster than this


def is_valid_instance_id(instance_id: str) -> bool:
    """Azure's rules: 1-100 characters, no leading '@', none of / \\ # ? (nor control characters)."""
    return (
        isinstance(instance_id, str)
        and 0 < len(instance_id) <= MAX_INSTANCE_ID
        and not instance_id.startswith("@")
        and not _FORBIDDEN_IN_ID.search(instance_id)
    )


# Tower's own instance ids are stricter than Azure's. The Durable SDK puts an instance id into its
# management URLs as is (azure-functions-durable 1.7.0, DurableOrchestrationClient: _get_start_new_url,
# _get_raise_event_url, RpcManagementOptions.to_url...: no quoting), so an id holding '%', '+', a space
# or non-ASCII text would address another instance than the one Tower computed. Every id Tower makes
# is therefore built of characters that never need encoding in a URL path and that Table keys accept:
# letters, digits and . _ : @ - ~ (never ending in '.', which some front ends strip). Free-form parts
# (message ids, run ids a caller gives) are kept only when they are of that alphabet already; otherwise
# what is outside it becomes '-' and a hash of the original keeps distinct inputs distinct.
#
# The shapes are disjoint (docs/architecture.md, "Instance ids"):
#   runs          run~<pipeline>@<yyyymmddThhmmssZ>             scheduled (the due time)
#                 run~<pipeline>@<yyyymmddThhmmssZ>-<6 hex>     started by hand (CLI, API, repair)
#                 run~<pipeline>:<message id>                   started by an event
#                 run~<name>                                    a run id a caller chose (API `run_id`)
#   service runs  <16 hex>~<run id>:<service>                   hash-led
# Runs share the fixed prefix `run~`, so an `instanceIdPrefix` query lists them and nothing else, and
# in the instance-id order of the Azure Storage backend they sort together, after every service run
# (hex digits sort before 'r'). Service runs start with a hash, so a run's thousands of service runs
# spread over the Instances and History tables' partitions instead of piling onto adjacent keys.
RUN_PREFIX = "run~"
_SAFE_PART = re.compile(r"[A-Za-z0-9._:@-]+")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._:@-]")
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@~-]+")
HASH_CHARS = 16  # 64 bits of SHA-256: the part of an id that keeps cut or rewritten ids distinct
MAX_GIVEN_RUN_ID = MAX_INSTANCE_ID - len(RUN_PREFIX)


def is_safe_instance_id(instance_id: str) -> bool:
    """An id Tower can use as is: valid in Azure, nothing to encode in a URL, not ending in '.'."""
    return (is_valid_instance_id(instance_id) and bool(_SAFE_ID.fullmatch(instance_id))
            and not instance_id.endswith("."))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:HASH_CHARS]


def fit_instance_id(prefix: str, free: str, suffix: str = "") -> str:
    """``prefix + free + suffix`` when `free` is of the safe alphabet and the whole fits; else `free`
    with what is outside the alphabet replaced by '-', cut to fit, then ``~`` and a hash of `free`
    (so distinct inputs keep distinct ids), then `suffix` whole. `prefix` and `suffix` are Tower's
    own (safe) text."""
    whole = prefix + free + suffix
    if _SAFE_PART.fullmatch(free) and is_safe_instance_id(whole):
        return whole
    digest = _digest(free)
    head = _UNSAFE_CHAR.sub("-", free)[: MAX_INSTANCE_ID - len(prefix) - len(digest) - 1 - len(suffix)]
    return f"{prefix}{head}~{digest}{suffix}"


def timed_run_id(pipeline: str, when: datetime, nonce: str = "") -> str:
    """``run~<pipeline>@<UTC yyyymmddThhmmssZ><nonce>``: the one shape of scheduled runs (no nonce:
    the due time makes the id) and of runs started by hand (a random nonce). The time stays whole at
    the end when a long pipeline name has to be cut."""
    stamp = when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return fit_instance_id(RUN_PREFIX, pipeline, f"@{stamp}{nonce}")


def given_run_id(value: Any) -> str:
    """The instance id of a run whose id a caller chose (the API's ``run_id``): ``run~<value>``
    (a value that already starts with ``run~`` stays as is); UsageError when it is not of the safe
    alphabet, rather than an id that a URL or the Durable API would read differently."""
    if not isinstance(value, str):
        raise UsageError(f"run_id: expected a string of letters, digits and . _ : @ -, got {type(value).__name__}")
    name = value[len(RUN_PREFIX):] if value.startswith(RUN_PREFIX) else value
    if not name or len(name) > MAX_GIVEN_RUN_ID or not _SAFE_PART.fullmatch(name) or name.endswith("."):
        raise UsageError(
            f"run_id {value!r}: use 1-{MAX_GIVEN_RUN_ID} letters, digits and . _ : @ - (not ending in"
            " '.'), e.g. 'backfill-2026-11-24'; the run's id is then 'run~' and that name"
        )
    return RUN_PREFIX + name


def service_instance_id(run_id: str, service: str) -> str:
    """``<16 hex>~<run_id>:<service>``, cut to 100 characters: hash-led (see above), still readable."""
    digest = _digest(f"{run_id}\0{service}")
    readable = re.sub(r"[^A-Za-z0-9._:@~-]", "-", f"{run_id}:{service}")
    return f"{digest}~{readable}"[:MAX_INSTANCE_ID].rstrip(".")


def service_job(plan: dict, name: str) -> ServiceJob:
    """What one `service_run` gets: one service of a frozen plan with its platform entry."""
    service = plan["services"][name]
    platform = PlatformEntry.from_json({"name": service["platform"], **plan["platforms"][service["platform"]]})
    expect = service.get("expect")
    return ServiceJob(run_id=plan["run_id"], pipeline=plan["pipeline"], service=name, platform=platform,
                      spec=service["spec"], params=service["params"], timeout=service["timeout"],
                      retry=RetryPolicy(**service["retry"]), simulated=bool(plan.get("simulated")),
                      expect=Expectation(**expect) if expect else None)


def new_run_id(pipeline: str, now: datetime) -> str:
    """A run started by hand: ``run~<pipeline>@<UTC yyyymmddThhmmssZ>-<6 hex>`` (see timed_run_id)."""
    return timed_run_id(pipeline, now, f"-{secrets.token_hex(3)}")


def build_plan(
    catalog: Catalog,
    pipeline: str,
    *,
    params: Mapping[str, Any] | Iterable[str] | None = None,
    selectors: Iterable[str] | None = None,
    run_id: str | None = None,
    durations: Mapping[str, float] | Callable[[list[str]], Mapping[str, float]] | None = None,
    recent: Mapping[str, Sequence[float]] | Callable[[list[str]], Mapping[str, Sequence[float]]] | None = None,
    simulate: bool = False,
    time_scale: float = 1.0,
    now: datetime | None = None,
) -> dict:
    """Freeze what a run of `pipeline` will do.

    params: a mapping or ``K=V`` strings; they override the pipeline's defaults and the services'
    own params. selectors narrow the pipeline's services (``name``, ``+name``, ``tag:x``...).
    durations: seconds per service from run history; they beat ``expected_duration`` for priorities.
    It may be a function of the selected services' names (asked only for those, once selected).
    recent: each service's last successful durations (newest first; a mapping or such a function):
    their median stands in for a missing `durations` entry, and with their spread it sets when the
    service's polls look (tower.polling); without them, the catalog's expected_duration does.
    simulate: run every service on the simulator for its expected duration x time_scale, keeping
    each original platform's concurrency limit.
    """
    from tower.deadlines import plan_deadline

    chosen = select_services(catalog, pipeline, selectors)
    spec = catalog.pipelines[pipeline]
    if not (isinstance(time_scale, (int, float)) and time_scale > 0):
        raise UsageError(f"time scale must be a number > 0, got {time_scale!r}")
    now = now or datetime.now(timezone.utc)
    if run_id is None:
        run_id = new_run_id(pipeline, now)
    elif not is_safe_instance_id(run_id):
        raise UsageError(
            f"run id {run_id!r}: 1-{MAX_INSTANCE_ID} letters, digits and . _ : @ - ~ (not starting with"
            " '@' nor ending in '.'); see tower.runs.plan.given_run_id"
        )

    deps = graph.restrict(catalog.deps(), chosen)
    run_params = _parse_params(params, pipeline, catalog, chosen)
    pipeline_params = {**spec.params, **run_params}
    if callable(durations):
        durations = durations(chosen)
    durations = dict(durations or {})
    if callable(recent):
        recent = recent(chosen)
    recent = recent or {}
    scale = time_scale if simulate else 1.0

    services = {}
    for name in chosen:
        svc = catalog.services[name]
        expect = (expectation_from_history(recent.get(name) or ([durations[name]] if name in durations else []))
                  or expectation_from_estimate(svc.expected_duration))
        expected = durations.get(name)
        if expected is None:
            expected = expectation_from_history(recent[name]).median if recent.get(name) else svc.expected
        services[name] = {
            "platform": svc.platform,
            "deps": list(deps[name]),
            "timeout": svc.timeout * scale if svc.timeout is not None else None,
            "retry": {
                "retries": svc.retry.retries,
                "backoff": svc.retry.backoff * scale,
                "max_backoff": svc.retry.max_backoff * scale,
            },
            "expected": float(expected) * scale,
            "spec": {"duration": float(expected)} if simulate else dict(svc.spec),
            "params": {**spec.params, **svc.params, **run_params},
            "iid": service_instance_id(run_id, name),
            "expect": None if expect is None else Expectation(expect.median * scale, expect.spread * scale).to_json(),
        }

    used = dict.fromkeys(services[name]["platform"] for name in chosen)
    platforms = {}
    for name in used:
        platform = catalog.platforms[name]
        platforms[name] = {
            "type": "sim" if simulate else platform.type,
            "max_concurrency": platform.max_concurrency,
            "settings": {"time_scale": time_scale} if simulate else dict(platform.settings),
            "poll": {  # scale is 1 unless simulated, and then MIN_SIM_POLL keeps a fast run sane
                "first": max(POLL_FIRST * scale, MIN_SIM_POLL),
                "factor": POLL_FACTOR,
                "max": max(POLL_MAX * scale, MIN_SIM_POLL),
                "linger": POLL_LINGER * scale,  # a real second of watching would cover 1/scale simulated ones
                "scale": scale,   # tower.polling's constants, in a simulated run's time
            },
        }

    return {
        "v": PLAN_VERSION,
        "run_id": run_id,
        "pipeline": pipeline,
        "priority": spec.priority,
        "params": pipeline_params,
        "created": iso(now),
        "simulated": bool(simulate),
        "services": services,
        "platforms": platforms,
        **plan_deadline(spec, now),
    }


def names_hint(word: str, choices: Iterable[str], noun: str) -> str:
    """``did you mean 'x'? <noun>: a, b`` for a near miss, else ``<noun>: a, b``: for "unknown ..." errors."""
    choices = list(choices)
    listing = f"{noun}: {', '.join(choices) or 'none'}"
    suggestion = did_you_mean(word, choices, noun)
    return f"{suggestion} {listing}" if suggestion.startswith("did you mean") else listing


def select_services(catalog: Catalog, pipeline: str, selectors: Iterable[str] | None = None) -> list[str]:
    """The pipeline's services, narrowed by a run's selectors; in topological order. UsageError for
    an unknown pipeline, a selector that matches none of its services, or an empty selection."""
    if pipeline not in catalog.pipelines:
        raise UsageError(f"unknown pipeline {pipeline!r} in {catalog.path}"
                         f" ({names_hint(pipeline, catalog.pipelines, 'pipelines')})")
    deps = catalog.deps()
    tags = {name: svc.tags for name, svc in catalog.services.items()}
    try:
        chosen = graph.select(catalog.pipelines[pipeline].selectors, deps, tags)
        if selectors is not None:
            picked: set[str] = set()
            for selector in selectors:
                found = graph.resolve_selector(selector, deps, tags) & set(chosen)
                if not found:
                    raise UsageError(
                        f"selector {selector!r} matches no service of pipeline {pipeline!r}"
                        f" (its services: {_preview(chosen)})"
                    )
                picked |= found
            chosen = [name for name in chosen if name in picked]
    except ValueError as exc:
        raise UsageError(f"pipeline {pipeline!r}: {exc}") from None
    if not chosen:
        raise UsageError(f"pipeline {pipeline!r} selects no services (check its 'services:' selectors)")
    return chosen


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _parse_params(
    params: Mapping[str, Any] | Iterable[str] | None, pipeline: str, catalog: Catalog, chosen: list[str]
) -> dict[str, Any]:
    """Run params as a dict. Keys must be known to the pipeline or one of its services; a ``K=V``
    string is converted to the type of the default it overrides (int, float, bool)."""
    if params is None:
        return {}
    if isinstance(params, Mapping):
        items = list(params.items())
    else:
        items = []
        for text in params:
            key, sep, value = str(text).partition("=")
            if not sep or not key.strip():
                raise UsageError(f"bad param {text!r}: write KEY=VALUE, e.g. --param date=2024-06-01")
            items.append((key.strip(), value))
    defaults = dict(catalog.pipelines[pipeline].params)
    for name in chosen:
        for key, value in catalog.services[name].params.items():
            defaults.setdefault(key, value)
    parsed = {}
    for key, value in items:
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise UsageError(
                f"unknown param {key!r} for pipeline {pipeline!r} (known params: {known};"
                " declare it under the pipeline's 'params' in the catalog)"
            )
        parsed[key] = _convert(key, value, defaults[key]) if isinstance(value, str) else value
    return parsed


def _convert(key: str, text: str, default: Any) -> Any:
    """Give a command-line value the type of the default it overrides."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise UsageError(f"param {key!r} must be true or false, got {text!r}")
    for kind, label in ((int, "an integer"), (float, "a number")):
        if isinstance(default, kind):
            try:
                return kind(text)
            except ValueError:
                raise UsageError(f"param {key!r} must be {label}, got {text!r}") from None
    return text
