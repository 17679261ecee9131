"""A local stand-in for the App Service / Functions managed-identity endpoint (``IDENTITY_ENDPOINT`` +
``IDENTITY_HEADER``, api-version 2019-08-01), which the real azure-identity asks for tokens: a token
per resource, or a 400 for a client id in `refused`. `asked` records (query, X-IDENTITY-HEADER)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

HEADER = "identity-header-not-a-secret"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        self.server.asked.append((query, self.headers.get("X-IDENTITY-HEADER")))
        if query.get("client_id") in self.server.refused:
            status, body = 400, {"statusCode": 400, "message": "No User Assigned identity with this client id"}
        else:
            status, body = 200, {"access_token": f"token-for-{query['resource']}", "token_type": "Bearer",
                                 "expires_on": str(int(time.time()) + 3600), "resource": query["resource"]}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def identity_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadingHTTPServer]:
    """The endpoint on 127.0.0.1 (a free port), and the environment azure-identity reads to find it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.asked, server.refused = [], set()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", HEADER)
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE",
                 "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
