"""Ports for the servers tests start (on 127.0.0.1 only)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on: free a moment ago (a test server may take it; a client gets refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
