"""The settings of the ``oidc_auth`` plugin (``[plugins.oidc_auth]``), checked at startup.

Each ``[[plugins.oidc_auth.providers]]`` block is a generic OpenID Connect provider of the
``oidc`` method; each ``[[plugins.oidc_auth.entra]]`` block a Microsoft Entra ID application of
the ``entra`` method. A mistake (an ``http://`` issuer on another host, a duplicate name, a
tenant that is neither a GUID, a domain nor ``organizations``/``common``/``consumers``) stops
startup with the TOML path of the block in the message.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from hubbub.config import Secret

__all__ = [
    "MULTI_TENANT",
    "EntraProviderSettings",
    "OidcAuthSettings",
    "OidcProviderSettings",
    "ProviderSettings",
    "check_url",
    "is_loopback",
]

PROVIDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,38}$"
"""A provider's name: it starts the ids of the principals it signs in, which must stay valid
user names (at most 64 characters with the 25 the digest adds)."""

MULTI_TENANT = frozenset({"common", "organizations", "consumers"})
"""Entra ID's tenant-independent endpoints: ``common`` (work, school and personal accounts),
``organizations`` (work and school accounts), ``consumers`` (personal accounts)."""

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
"""A tenant id (Entra ID writes them lower-case)."""

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)

RESERVED_PARAMS = frozenset(
    {
        "client_id",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
    }
)
"""Authorization request parameters hubbub sets itself (``authorize_params`` may not)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """Return ``url`` without a trailing ``/`` if it is an absolute ``https://`` URL (or
    ``http://`` to a loopback host, for tests and local providers) without query or fragment;
    else raise :class:`ValueError` saying so about ``what``."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https:// URL, got {url!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"{what} must use https:// (http:// is allowed only for a loopback host), got {url!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not have a query or a fragment, got {url!r}")
    return url.rstrip("/")


class ProviderSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """What every identity provider block has, generic or Entra ID."""

    name: Annotated[str, msgspec.Meta(pattern=PROVIDER_NAME)]
    """The provider's name: ``GET /api/auth/<method>/login?provider=NAME`` picks it, and the
    ids of the principals it signs in start with it (``NAME-<24 hex digits>``). Letters,
    digits, ``_``, ``.`` and ``-``, at most 39 characters, unique across both lists. Changing
    it changes those ids: their owners lose their conversations."""
    client_id: Annotated[str, msgspec.Meta(min_length=1)]
    """The client (application) id hubbub is registered under at the provider; ID tokens must
    name it in ``aud``."""
    client_secret: Secret | None = None
    """The client secret (``{ env = "NAME" }`` or ``{ file = "PATH" }``); omit it for a public
    client, which proves itself with PKCE alone."""
    scopes: list[str] = msgspec.field(default_factory=lambda: ["openid", "email", "profile"])
    """Scopes to ask for; must include ``openid``."""
    roles_claim: str = ""
    """The ID token claim whose values ``role_map`` turns into hubbub roles (a string or a
    list of strings; a dotted path such as ``realm_access.roles`` reaches into objects when no
    claim has that exact name). Empty: no mapping, everyone gets ``default_roles``."""
    role_map: dict[str, str] = msgspec.field(default_factory=dict)
    """Claim value to hubbub role, e.g. ``{ "hubbub-admins" = "admin" }``; values without an
    entry are ignored."""
    default_roles: list[str] = msgspec.field(default_factory=lambda: ["user"])
    """Roles everyone this provider signs in gets, besides the mapped ones."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    """Seconds to wait for the provider (discovery, keys, code exchange) before the login
    fails with 503 (up to 120)."""
    authorize_params: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra parameters of the authorization request, e.g. ``{ prompt = "select_account" }``
    (not those hubbub sets: ``state``, ``nonce``, ``scope``, ``redirect_uri``...)."""

    def __post_init__(self) -> None:
        if "openid" not in self.scopes:
            raise ValueError(f"provider {self.name!r}: scopes must include 'openid'")
        reserved = sorted(RESERVED_PARAMS & set(self.authorize_params))
        if reserved:
            raise ValueError(
                f"provider {self.name!r}: authorize_params may not set {', '.join(reserved)} "
                "(hubbub sets them)"
            )
        empty = [value for value, role in self.role_map.items() if not role.strip()]
        if empty or any(not role.strip() for role in self.default_roles):
            raise ValueError(f"provider {self.name!r}: roles must not be empty")


class OidcProviderSettings(ProviderSettings, kw_only=True, frozen=True):
    """One generic OpenID Connect provider of the ``oidc`` method
    (``[[plugins.oidc_auth.providers]]``)."""

    issuer: str
    """The provider's issuer URL (``https://``; ``http://`` only on a loopback host). Its
    discovery document is read from ``<issuer>/.well-known/openid-configuration`` and must
    name the same issuer; ID tokens must carry it in ``iss``."""
    allowed_domains: list[str] = msgspec.field(default_factory=list)
    """If set, only people whose ``email`` is in one of these domains (and whose provider says
    ``email_verified``) may sign in. Empty: anyone the provider signs in."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_url(self.issuer, f"provider {self.name!r}: issuer")
        bad = [d for d in self.allowed_domains if not _DOMAIN.match(d)]
        if bad:
            raise ValueError(f"provider {self.name!r}: allowed_domains: not a domain: {bad[0]!r}")


class EntraProviderSettings(ProviderSettings, kw_only=True, frozen=True):
    """One Microsoft Entra ID application of the ``entra`` method
    (``[[plugins.oidc_auth.entra]]``): a preset of OpenID Connect whose issuer is built from
    ``authority`` and ``tenant``."""

    tenant: str
    """The directory (tenant) id (a GUID), one of its domains (``contoso.onmicrosoft.com``),
    or ``organizations``, ``common`` or ``consumers`` for a multi-tenant application."""
    authority: str = "https://login.microsoftonline.com"
    """Where Entra ID answers: the public cloud by default; a national cloud's
    (``https://login.microsoftonline.us``) otherwise."""
    allowed_tenants: list[str] = msgspec.field(default_factory=list)
    """Tenant ids (GUIDs) whose people may sign in. Empty: any tenant the ``tenant`` endpoint
    admits (for ``organizations`` and ``common``, every organisation in the world: set this
    unless that is what you want)."""
    roles_claim: str = "roles"
    """The claim ``role_map`` reads: ``roles`` (app roles assigned in Entra ID, the default)
    or ``groups`` (group object ids; needs the groups claim configured for the app)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_url(self.authority, f"provider {self.name!r}: authority")
        tenant = self.tenant
        if not (tenant in MULTI_TENANT or GUID.match(tenant) or _DOMAIN.match(tenant)):
            raise ValueError(
                f"provider {self.name!r}: tenant must be a tenant id (GUID), a domain, or "
                f"one of {', '.join(sorted(MULTI_TENANT))}; got {tenant!r}"
            )
        bad = [t for t in self.allowed_tenants if not GUID.match(t)]
        if bad:
            raise ValueError(
                f"provider {self.name!r}: allowed_tenants must be tenant ids (GUIDs), "
                f"got {bad[0]!r}"
            )

    @property
    def discovery_url(self) -> str:
        """``<authority>/<tenant>/v2.0/.well-known/openid-configuration``."""
        return f"{self.authority.rstrip('/')}/{self.tenant}/v2.0/.well-known/openid-configuration"


class OidcAuthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Settings of the ``oidc_auth`` plugin (``[plugins.oidc_auth]``): the identity providers
    of the ``oidc`` and ``entra`` methods, and how their ID tokens are checked."""

    providers: list[OidcProviderSettings] = msgspec.field(default_factory=list)
    """Generic OpenID Connect providers (``[[plugins.oidc_auth.providers]]``), for the
    ``oidc`` method; the first is used when a login names none."""
    entra: list[EntraProviderSettings] = msgspec.field(default_factory=list)
    """Microsoft Entra ID applications (``[[plugins.oidc_auth.entra]]``), for the ``entra``
    method; the first is used when a login names none."""
    leeway: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0
    """Seconds of clock difference with the providers tolerated when checking an ID token's
    ``exp``, ``iat`` and ``nbf`` (0 to 300)."""
    jwks_refetch_interval: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 60.0
    """An ID token signed with a key hubbub does not know makes it read the provider's keys
    again (the provider rotated its keys), but at most once per this many seconds per
    provider, so forged tokens cannot make it hammer the provider."""
    metadata_ttl: Annotated[float, msgspec.Meta(ge=60, le=604_800)] = 3600.0
    """Seconds a provider's discovery document and keys are kept before they are read again
    (60 to a week)."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for provider in [*self.providers, *self.entra]:
            if provider.name in seen:
                raise ValueError(
                    f"two identity providers are named {provider.name!r}: names must be "
                    "unique across providers and entra"
                )
            seen.add(provider.name)
