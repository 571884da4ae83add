"""Auth methods ``oidc`` (generic OpenID Connect) and ``entra`` (Microsoft Entra ID, a preset
of ``oidc``): sign-in through an identity provider, with several providers at once by name.

The flow (the reference server drives it; see ``docs/auth-oidc.md``)::

    browser ── GET /api/auth/oidc/login?provider=corp ──> hubbub: LoginAttempt (state, nonce,
                                                           PKCE verifier), cookie, redirect
            ── provider's authorization endpoint (sign in) ──> redirect back with code+state
            ── GET /api/auth/oidc/callback?code=...&state=... ──> hubbub: attempt checked,
               complete_login(): code exchanged (PKCE), ID token checked against the
               provider's keys, issuer, audience, expiry and nonce ──> Principal
            <── hubbub session tokens

Settings (``[plugins.oidc_auth]``, see :class:`~hubbub_plugins.oidc_auth.settings.
OidcAuthSettings`)::

    [[plugins.oidc_auth.providers]]
    name = "corp"
    issuer = "https://idp.example.com"
    client_id = "hubbub"
    client_secret = { env = "CORP_OIDC_SECRET" }
    roles_claim = "groups"
    role_map = { "hubbub-admins" = "admin" }

    [[plugins.oidc_auth.entra]]
    name = "contoso"
    tenant = "organizations"
    allowed_tenants = ["7c1f0c52-8a4e-4a8f-9d0e-3c2b1a0f9e8d"]
    client_id = "00000000-0000-0000-0000-000000000000"
    client_secret = { env = "ENTRA_SECRET" }

Nothing heavy is imported until a method is built (authlib, httpx and PyJWT load then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubbub import hookimpl
from hubbub_plugins.oidc_auth.errors import IdentityProviderUnavailableError, LoginRefusedError
from hubbub_plugins.oidc_auth.settings import (
    EntraProviderSettings,
    OidcAuthSettings,
    OidcProviderSettings,
)

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar
    from hubbub_plugins.oidc_auth.method import OidcMethod

__all__ = [
    "ENTRA",
    "OIDC",
    "EntraProviderSettings",
    "IdentityProviderUnavailableError",
    "LoginRefusedError",
    "OidcAuthSettings",
    "OidcProviderSettings",
    "build_entra",
    "build_oidc",
]

OIDC = "oidc"
"""The generic method's registered name; its providers are ``[[plugins.oidc_auth.providers]]``."""
ENTRA = "entra"
"""The Entra ID method's registered name; its providers are ``[[plugins.oidc_auth.entra]]``."""


def build_oidc(context: ComponentContext[OidcAuthSettings]) -> OidcMethod:
    """Build the ``oidc`` method over ``[[plugins.oidc_auth.providers]]``."""
    from hubbub_plugins.oidc_auth.method import OidcMethod

    settings = context.settings or OidcAuthSettings()
    return OidcMethod(context.name, settings.providers, settings, log=context.logger)


def build_entra(context: ComponentContext[OidcAuthSettings]) -> OidcMethod:
    """Build the ``entra`` method over ``[[plugins.oidc_auth.entra]]``."""
    from hubbub_plugins.oidc_auth.method import OidcMethod

    settings = context.settings or OidcAuthSettings()
    return OidcMethod(context.name, settings.entra, settings, log=context.logger)


@hookimpl
def register_auth_methods(register: Registrar) -> None:
    register(
        OIDC,
        build_oidc,
        settings=OidcAuthSettings,
        description="sign-in through OpenID Connect providers ([[plugins.oidc_auth.providers]])",
    )
    register(
        ENTRA,
        build_entra,
        settings=OidcAuthSettings,
        description="sign-in through Microsoft Entra ID ([[plugins.oidc_auth.entra]])",
    )
