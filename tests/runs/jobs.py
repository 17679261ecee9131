"""Service-run inputs for ledger tests: real `ServiceJob` JSON, as `store_plan` stores it."""

from tower.catalog.model import RetryPolicy
from tower.contracts import PlatformEntry, ServiceJob

POLL = {"first": 1.0, "factor": 1.5, "max": 60.0, "linger": 0.5, "scale": 1.0}


def job_json(run_id: str, name: str) -> dict:
    platform = {"name": "x", "type": "sim", "max_concurrency": None, "settings": {}, "poll": POLL}
    return ServiceJob(run_id, "p", name, PlatformEntry.from_json(platform), {"duration": 1.0}, {}, None,
                      RetryPolicy()).to_json()


def named(jobs: dict[str, ServiceJob]) -> dict[str, str]:
    """A step's `start` or `ensure` as {instance id: service}, in its order."""
    return {instance_id: job.service for instance_id, job in jobs.items()}
