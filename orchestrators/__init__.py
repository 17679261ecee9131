"""Orchestrator blueprints: `pipeline_run` (one run of a plan) and `service_run` (one service)."""

from orchestrators.pipeline import bp

__all__ = ["bp"]
