"""Who a valid ID token signs in: the hubbub principal (a stable id per issuer and subject, a
display name, roles mapped from a claim) and the admission rules that depend on the person
(allowed e-mail domains, allowed Entra ID tenants)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from hubbub.auth import check_user_name
from hubbub.models import Principal
from hubbub_plugins.oidc_auth.errors import LoginRefusedError
from hubbub_plugins.oidc_auth.settings import (
    EntraProviderSettings,
    OidcProviderSettings,
    ProviderSettings,
)

__all__ = ["check_admission", "claim_values", "principal_for", "principal_id"]

NAME_CLAIMS = ("preferred_username", "name", "email")
"""Claims the display name is taken from, the first present first."""

MAX_NAME = 200
"""Characters of a display name kept."""


def principal_id(provider: str, issuer: str, subject: str) -> str:
    """``<provider>-<24 hex digits of sha256(issuer + "\\n" + subject)>``: stable, unique per
    (issuer, subject) and a valid user name."""
    digest = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()[:24]
    return check_user_name(f"{provider}-{digest}")


def claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    """The string values of claim ``name`` (a string or a list), or of the dotted path
    ``name`` when no claim has that exact name (``realm_access.roles``); ``[]`` when absent."""
    if not name:
        return []
    value: Any = claims.get(name)
    if name not in claims and "." in name:
        value = claims
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _verified(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def check_admission(settings: ProviderSettings, claims: Mapping[str, Any]) -> None:
    """Refuse people the provider's settings do not admit: an e-mail outside
    ``allowed_domains`` (or not verified), a tenant outside ``allowed_tenants``."""
    if isinstance(settings, OidcProviderSettings) and settings.allowed_domains:
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise LoginRefusedError(
                "no e-mail address to check the domain of", provider=settings.name
            )
        if not _verified(claims.get("email_verified")):
            raise LoginRefusedError("e-mail address not verified", provider=settings.name)
        domain = email.rsplit("@", 1)[1].lower()
        if domain not in {d.lower() for d in settings.allowed_domains}:
            raise LoginRefusedError(
                f"e-mail domain {domain!r} is not allowed", provider=settings.name
            )
    if isinstance(settings, EntraProviderSettings) and settings.allowed_tenants:
        tid = claims.get("tid")
        allowed = {t.lower() for t in settings.allowed_tenants}
        if not isinstance(tid, str) or tid.lower() not in allowed:
            raise LoginRefusedError(f"tenant {tid!r} is not allowed", provider=settings.name)


def principal_for(
    settings: ProviderSettings,
    claims: Mapping[str, Any],
    *,
    method: str,
    log: logging.Logger | None = None,
) -> Principal:
    """The principal a checked ID token signs in."""
    name = next(
        (claims[c] for c in NAME_CLAIMS if isinstance(claims.get(c), str) and claims[c]), ""
    )
    values = claim_values(claims, settings.roles_claim)
    if not values and log is not None and _groups_overage(settings, claims):
        log.warning(
            "provider %s sent no groups claim because the person is in too many groups "
            "(groups overage): only default roles are given; map app roles (roles_claim = "
            "'roles') or limit the groups claim to the application's groups",
            settings.name,
            extra={"provider": settings.name},
        )
    roles = {settings.role_map[v] for v in values if v in settings.role_map}
    return Principal(
        id=principal_id(settings.name, str(claims["iss"]), str(claims["sub"])),
        name=name[:MAX_NAME],
        roles=frozenset({*settings.default_roles, *roles}),
        auth_method=method,
    )


def _groups_overage(settings: ProviderSettings, claims: Mapping[str, Any]) -> bool:
    names = claims.get("_claim_names")
    return (
        settings.roles_claim == "groups" and isinstance(names, Mapping) and "groups" in names
    ) or (settings.roles_claim == "groups" and claims.get("hasgroups") is True)
