"""Trigger blueprints: the schedule tick (timer), events (Service Bus), the HTTP API and the daily purge."""

from triggers.api import bp as api
from triggers.events import bp as events
from triggers.purge import bp as purge
from triggers.schedule import bp as schedule

blueprints = (schedule, events, api, purge)

__all__ = ["api", "blueprints", "events", "purge", "schedule"]
