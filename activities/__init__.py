"""Activity blueprints: a service's submit / poll / cancel, and a run's ledger steps."""

from activities import runs, services

blueprints = (services.bp, runs.bp)

__all__ = ["blueprints"]
