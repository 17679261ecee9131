"""The app's Azure credential: its managed identity in Azure, the developer's login elsewhere.

On an Azure host (the platform sets ``IDENTITY_ENDPOINT``, or ``MSI_ENDPOINT`` on older hosts) this is
`ManagedIdentityCredential` alone, never the `DefaultAzureCredential` chain: the chain turns every
failure into `ClientAuthenticationError`, so an identity endpoint that is briefly unreachable would
read as a refused identity and a service would fail without a retry; alone, the credential raises
`ServiceRequestError` for that. The identity is the user-assigned one named by `client_id`, else by
``AZURE_CLIENT_ID`` (the Bicep sets it: the app has only a user-assigned identity), else the
system-assigned one. azure-identity is imported at first use (~0.3 s).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

AZURE_IDENTITY_ENDPOINTS = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT")


def azure_credential(client_id: str | None = None, env: Mapping[str, str] | None = None) -> Any:
    """A credential for the app's identity (see the module docstring)."""
    env = os.environ if env is None else env
    client_id = client_id or env.get("AZURE_CLIENT_ID") or None
    if any(env.get(name) for name in AZURE_IDENTITY_ENDPOINTS):
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id, exclude_interactive_browser_credential=True)
