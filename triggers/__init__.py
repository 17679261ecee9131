"""Trigger blueprints: the schedule tick (timer), events (Service Bus) and the HTTP API."""

from triggers.api import bp as api
from triggers.events import bp as events
from triggers.schedule import bp as schedule

blueprints = (schedule, events, api)

__all__ = ["api", "blueprints", "events", "schedule"]
