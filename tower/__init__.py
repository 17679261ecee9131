"""Tower: an event-driven orchestrator for data services on Azure Durable Functions.

The library registers no Azure functions; the app shell (``function_app.py``, ``triggers/``,
``orchestrators/``, ``activities/``) does. Only ``tower.local`` (the local host) imports the
Functions SDKs, and platform SDKs are imported lazily where used, so the CLI starts fast.
"""

__version__ = "0.1.0"
