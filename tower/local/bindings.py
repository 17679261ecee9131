"""What the local host needs to know about the app's non-durable functions, read off their bindings.

``function.get_function_json()`` is what the Functions host itself reads, so the same fields decide
here: an HTTP trigger's route, methods and auth level, a timer's schedule and runOnStartup, a Service
Bus trigger's queue or topic/subscription. ``%NAME%`` binding expressions resolve from the environment.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tower.errors import ConfigError

ROUTE_PREFIX = "api"
_SETTING = re.compile(r"%([^%]+)%")
_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(\?)?(?::[^}]*)?\}")


@dataclass(frozen=True)
class Trigger:
    """One non-durable function: its name, kind, user code and the argument names it takes."""

    name: str
    type: str  # httpTrigger | timerTrigger | serviceBusTrigger | ...
    fn: Callable
    arg: str  # the trigger's parameter name
    client_arg: str | None  # the durableClient parameter, if any
    wants_context: bool
    binding: Mapping  # the trigger binding's JSON fields


def read_triggers(functions) -> list[Trigger]:
    """Triggers of the app's non-durable functions (orchestrators/activities/entities are the engine's)."""
    triggers = []
    for function in functions:
        bindings = json.loads(function.get_function_json())["bindings"]
        trigger = next((b for b in bindings if b["type"].endswith("Trigger")), None)
        if trigger is None or trigger["type"] in ("orchestrationTrigger", "activityTrigger", "entityTrigger"):
            continue
        client = next((b["name"] for b in bindings if b["type"] == "durableClient"), None)
        fn = function.get_user_function()
        triggers.append(
            Trigger(
                name=function.get_function_name(),
                type=trigger["type"],
                fn=fn,
                arg=trigger["name"],
                client_arg=client,
                wants_context="context" in inspect.signature(fn).parameters,
                binding=trigger,
            )
        )
    return triggers


def resolve_setting(value: str, where: str, env: Mapping[str, str] | None = None) -> str:
    """Expand ``%NAME%`` binding expressions from app settings (here: the environment)."""
    env = os.environ if env is None else env

    def expand(match: re.Match) -> str:
        if match.group(1) not in env:
            raise ConfigError(f"{where}: app setting {match.group(1)!r} is not set (export it before `tower serve`)")
        return env[match.group(1)]

    return _SETTING.sub(expand, value)


@dataclass(frozen=True)
class Route:
    """An HTTP trigger's route template compiled for matching (``{name}``, ``{name?}``, ``{*rest}``)."""

    trigger: Trigger
    template: str
    pattern: re.Pattern
    methods: frozenset[str]  # empty: every method
    literal_weight: int  # routes with more literal text win, as in ASP.NET routing

    @classmethod
    def of(cls, trigger: Trigger) -> Route:
        template = (trigger.binding.get("route") or trigger.name).strip("/")
        regex, last = "", 0
        for match in _PARAM.finditer(template):
            regex += re.escape(template[last : match.start()])
            star, name, optional = match.groups()
            body = f"(?P<{name}>.*)" if star else f"(?P<{name}>[^/]+)"
            if optional or star:
                if regex.endswith("/"):  # an optional last segment takes its slash with it
                    regex = regex[:-1] + f"(?:/{body})?"
                else:
                    regex += f"{body}?" if not star else body
            else:
                regex += body
            last = match.end()
        regex += re.escape(template[last:])
        methods = frozenset(m.upper() for m in trigger.binding.get("methods") or ())
        weight = len(_PARAM.sub("", template))
        return cls(trigger, template, re.compile(f"^{regex}/?$", re.IGNORECASE), methods, weight)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}

    def allows(self, method: str) -> bool:
        return not self.methods or method.upper() in self.methods

    @property
    def auth_level(self) -> str:
        return str(self.trigger.binding.get("authLevel") or "FUNCTION").upper()


def http_routes(triggers: list[Trigger]) -> list[Route]:
    """The HTTP triggers' routes in the order ``find_route`` tries them: most literal text first."""
    return sorted((Route.of(t) for t in triggers if t.type == "httpTrigger"), key=lambda r: -r.literal_weight)


def find_route(routes: list[Route], method: str, path: str):
    """(route, route_params) for a request, or (None, allowed_methods) when none serves it.

    ``routes`` come in precedence order, as ``http_routes`` returns them.
    """
    allowed: set[str] = set()
    for route in routes:
        params = route.match(path)
        if params is None:
            continue
        if route.allows(method):
            return route, params
        allowed |= route.methods
    return None, allowed
