"""Bearer tokens from the app's Azure identity (managed identity in Azure, developer login locally).

azure-identity is imported here, on first use only: it costs ~0.3 s and most commands never need it.
A `Credentials` keeps one credential per client id, so its token cache serves every call: the
runtime's platform registry (`tower.platforms.Platforms`) gives its one `Credentials` to every
adapter it builds; an adapter built alone makes its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tower.errors import NonRetryableError, RetryableError

# The application id of Azure Databricks: the audience of tokens for any Azure Databricks workspace.
AZURE_DATABRICKS_AUDIENCE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"


def scope_for(audience: str) -> str:
    """Entra ID wants a scope: an audience (app id URI or app id) followed by ``/.default``."""
    audience = audience.rstrip("/")
    return audience if audience.endswith("/.default") else f"{audience}/.default"


def _credential(client_id: str | None) -> Any:
    """Managed identity in Azure; az / azd / environment credentials on a developer machine."""
    from tower.identity import azure_credential

    return azure_credential(client_id)


class Credentials:
    """Azure credentials by client id (None: the system-assigned identity or the developer's login),
    each built on first use by `make` (default: `tower.identity.azure_credential`) and then kept, with its
    token cache. Tests pass a `make` that returns a stand-in (anything with ``get_token(scope)``)."""

    def __init__(self, make: Callable[[str | None], Any] | None = None):
        self._make = make if make is not None else _credential
        self._lock = threading.Lock()
        self._made: dict[str | None, Any] = {}

    def get(self, client_id: str | None) -> Any:
        with self._lock:
            if client_id not in self._made:
                self._made[client_id] = self._make(client_id)
            return self._made[client_id]

    def bearer_token(self, audience: str, *, client_id: str | None = None, platform: str = "") -> str:
        return bearer_token(audience, client_id=client_id, platform=platform, credentials=self)


def bearer_token(audience: str, *, client_id: str | None = None, platform: str = "",
                 credentials: Credentials | None = None) -> str:
    """An access token for `audience` from `credentials` (default: a credential made for this call
    only; keep a `Credentials` to reuse its token cache); raises PlatformError (never with the token
    in it)."""
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

    try:
        return (credentials or Credentials()).get(client_id).get_token(scope_for(audience)).token
    except ClientAuthenticationError as exc:
        raise NonRetryableError(
            f"could not get an Azure token for audience {audience!r}: {exc.message or exc} "
            "(in Azure: give the Function App a managed identity and grant it access; "
            "locally: run `az login`)",
            platform=platform,
        ) from None
    except ServiceRequestError as exc:
        raise RetryableError(
            f"could not reach the Azure token endpoint for audience {audience!r}: {exc}", platform=platform
        ) from None
