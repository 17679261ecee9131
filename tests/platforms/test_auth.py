"""Bearer tokens from the app's managed identity (`tower.platforms._auth`), with the real azure-identity
against a local stand-in for the App Service / Functions identity endpoint (``IDENTITY_ENDPOINT`` +
``IDENTITY_HEADER``, api-version 2019-08-01: the protocol a Function App's managed identity speaks)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from tower.errors import NonRetryableError
from tower.platforms._auth import bearer_token

HEADER = "identity-header-not-a-secret"
_client_ids = (f"uami-{n}" for n in itertools.count(1))  # credentials are kept per client id: one each


class _IdentityEndpoint(BaseHTTPRequestHandler):
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


@pytest.fixture
def endpoint(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IdentityEndpoint)
    server.asked, server.refused = [], set()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", HEADER)
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE",
                 "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("audience", ["api://tower-scores", "api://tower-scores/", "api://tower-scores/.default"])
def test_a_token_is_asked_for_the_audience_as_the_identity_endpoint_wants_it(endpoint, audience):
    client_id = next(_client_ids)
    assert bearer_token(audience, client_id=client_id, platform="http") == "token-for-api://tower-scores"
    query, header = endpoint.asked[-1]
    assert (query["resource"], query["client_id"], header) == ("api://tower-scores", client_id, HEADER)


def test_an_identity_the_endpoint_refuses_is_a_clear_error_that_is_not_retried(endpoint):
    client_id = next(_client_ids)
    endpoint.refused.add(client_id)
    with pytest.raises(NonRetryableError) as caught:
        bearer_token("api://tower-scores", client_id=client_id, platform="http")
    message = str(caught.value)
    assert message.startswith("could not get an Azure token for audience 'api://tower-scores': ")
    assert message.endswith("(in Azure: give the Function App a managed identity and grant it access; "
                            "locally: run `az login`)")
    assert caught.value.platform == "http"
