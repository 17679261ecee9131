"""Bearer tokens from the app's Azure identity (managed identity in Azure, developer login locally).

azure-identity is imported here, on first use only: it costs ~0.3 s and most commands never need it.
One credential per (client id) per process, so its token cache is shared by every adapter call.
"""

from __future__ import annotations

import functools
from typing import Any

from tower.errors import NonRetryableError, RetryableError

# The application id of Azure Databricks: the audience of tokens for any Azure Databricks workspace.
AZURE_DATABRICKS_AUDIENCE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"


def scope_for(audience: str) -> str:
    """Entra ID wants a scope: an audience (app id URI or app id) followed by ``/.default``."""
    audience = audience.rstrip("/")
    return audience if audience.endswith("/.default") else f"{audience}/.default"


@functools.lru_cache(maxsize=8)
def _credential(client_id: str | None) -> Any:
    from azure.identity import DefaultAzureCredential

    # Managed identity in Azure; az / azd / environment credentials on a developer machine.
    return DefaultAzureCredential(
        managed_identity_client_id=client_id, exclude_interactive_browser_credential=True
    )


def bearer_token(audience: str, *, client_id: str | None = None, platform: str = "") -> str:
    """An access token for `audience`; raises PlatformError (never with the token in it)."""
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

    try:
        return _credential(client_id).get_token(scope_for(audience)).token
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
