"""Trigger blueprints: the schedule tick (timer), events (Service Bus), the HTTP API, the daily purge,
the dashboard and push completion (platform notifications)."""

from triggers.api import bp as api
from triggers.dashboard import bp as dashboard
from triggers.events import bp as events
from triggers.notify import bp as notify
from triggers.purge import bp as purge
from triggers.schedule import bp as schedule

blueprints = (schedule, events, api, purge, dashboard, notify)

__all__ = ["api", "blueprints", "dashboard", "events", "notify", "purge", "schedule"]
