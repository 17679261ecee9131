"""Bearer tokens from the app's managed identity (`tower.platforms._auth`), with the real azure-identity
against a local stand-in for the App Service / Functions identity endpoint (``IDENTITY_ENDPOINT`` +
``IDENTITY_HEADER``, api-version 2019-08-01: the protocol a Function App's managed identity speaks)."""

from __future__ import annotations

import itertools

import pytest

from tests.platforms.identity_endpoint import HEADER, identity_endpoint
from tower.errors import NonRetryableError
from tower.platforms._auth import bearer_token

_client_ids = (f"uami-{n}" for n in itertools.count(1))  # credentials are kept per client id: one each


@pytest.fixture
def endpoint(monkeypatch):
    with identity_endpoint(monkeypatch) as server:
        yield server


@pytest.mark.parametrize(("audience", "resource"), [
    ("api://tower-scores", "api://tower-scores"), ("api://tower-scores/", "api://tower-scores"),
    ("api://tower-scores/.default", "api://tower-scores"), ("api://SCORES-X/", "api://SCORES-X"),
])
def test_a_token_is_asked_for_the_audience_as_the_identity_endpoint_wants_it(endpoint, audience, resource):
    client_id = next(_client_ids)
    assert bearer_token(audience, client_id=client_id, platform="http") == f"token-for-{resource}"
    query, header = endpoint.asked[-1]
    assert (query["resource"], query["client_id"], header) == (resource, client_id, HEADER)


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
