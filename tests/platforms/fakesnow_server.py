"""Start and stop a fakesnow server (the local Snowflake stand-in): the example's helper, shared."""

from examples.local.fakesnow_process import free_port, start, stop

__all__ = ["free_port", "start", "stop"]
