"""Activity blueprints: submit / poll / cancel a service, record results, signal instances."""

from activities.services import bp

__all__ = ["bp"]
