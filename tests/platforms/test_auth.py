"""Bearer tokens from the app's managed identity (`tower.platforms._auth`), with the real azure-identity
against a local stand-in for the App Service / Functions identity endpoint (``IDENTITY_ENDPOINT`` +
``IDENTITY_HEADER``, api-version 2019-08-01: the protocol a Function App's managed identity speaks)."""

from __future__ import annotations

import itertools

import pytest

from tests.platforms.identity_endpoint import HEADER, identity_endpoint
from tower.errors import NonRetryableError, RetryableError
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


def test_an_identity_endpoint_that_cannot_be_reached_is_retried(monkeypatch):
    """On an Azure host the credential is the managed identity alone: a chain would report the
    refused connection as a refused identity, and the service would fail without a retry."""
    with identity_endpoint(monkeypatch) as server:
        port = server.server_address[1]
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{port}/msi/token")  # nobody listens there now
    with pytest.raises(RetryableError) as caught:
        bearer_token("api://tower-scores", client_id=next(_client_ids), platform="http")
    assert "could not reach the Azure token endpoint" in str(caught.value) and caught.value.platform == "http"


def test_without_a_client_id_the_token_is_for_the_apps_user_assigned_identity(endpoint, monkeypatch):
    """The Bicep gives the app only a user-assigned identity and names it in AZURE_CLIENT_ID: a
    platform with no `client_id` of its own must get that identity's token, not ask for a
    system-assigned one the app does not have."""
    monkeypatch.setenv("AZURE_CLIENT_ID", "uami-of-the-app")
    assert bearer_token("api://tower-scores", platform="http") == "token-for-api://tower-scores"
    assert endpoint.asked[-1][0]["client_id"] == "uami-of-the-app"


def test_off_azure_the_developers_login_chain_is_used():
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    from tower.identity import azure_credential

    assert isinstance(azure_credential(env={}), DefaultAzureCredential)
    on_azure = {"IDENTITY_ENDPOINT": "http://127.0.0.1:1/token", "IDENTITY_HEADER": "h"}
    assert isinstance(azure_credential(env=on_azure), ManagedIdentityCredential)


def test_a_kept_credential_that_is_refused_names_the_platform_that_asked():
    from azure.core.exceptions import ClientAuthenticationError

    from tower.platforms._auth import Credentials

    class Refused:
        def get_token(self, scope):
            raise ClientAuthenticationError("identity not assigned")

    with pytest.raises(NonRetryableError) as caught:
        Credentials(make=lambda client_id: Refused()).bearer_token("api://x", platform="databricks")
    assert caught.value.platform == "databricks"
    assert str(caught.value).startswith("could not get an Azure token for audience 'api://x': identity not assigned ")
