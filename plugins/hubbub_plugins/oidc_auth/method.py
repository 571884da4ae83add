"""The ``oidc`` and ``entra`` auth methods: sign-in through an identity provider.

The server creates each :class:`~hubbub.contracts.LoginAttempt` (state, nonce, PKCE verifier,
redirect URI), sends the browser to :meth:`OidcMethod.login_url`, and hands the callback's
query to :meth:`OidcMethod.complete_login`, which exchanges the code, checks the ID token and
returns the principal; the server then opens a hubbub session for it. Requests are never
authenticated with the provider's tokens (:meth:`OidcMethod.authenticate` recognises none):
after the login, hubbub's own session tokens are what callers present.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence

from hubbub.contracts import Credentials, LoginAttempt
from hubbub.errors import NotFoundError
from hubbub.models import Health, Principal
from hubbub_plugins.oidc_auth.errors import IdentityProviderUnavailableError, LoginRefusedError
from hubbub_plugins.oidc_auth.identity import check_admission, principal_for
from hubbub_plugins.oidc_auth.provider import TENANT_PLACEHOLDER, ProviderClient
from hubbub_plugins.oidc_auth.settings import (
    MULTI_TENANT,
    EntraProviderSettings,
    OidcAuthSettings,
    ProviderSettings,
)

__all__ = ["OidcMethod"]

MAX_LOGGED = 200
"""Characters of a provider's error text that go to the log."""


def _clip(value: str) -> str:
    return repr(value[:MAX_LOGGED])  # repr: no line breaks from a query string in the log


class OidcMethod:
    """A :class:`hubbub.contracts.RedirectAuthMethod` over one or more identity providers.

    :param method: the registered name (``oidc`` or ``entra``): :attr:`Principal.auth_method
        <hubbub.models.Principal.auth_method>` of everyone it signs in.
    :param providers: the providers' settings blocks, the default one first.
    :param settings: the plugin's settings (leeway, key re-read interval, cache lifetime).
    :param log: where logins, refusals and provider trouble are logged.
    """

    def __init__(
        self,
        method: str,
        providers: Sequence[ProviderSettings],
        settings: OidcAuthSettings | None = None,
        *,
        log: logging.Logger | None = None,
    ) -> None:
        settings = settings or OidcAuthSettings()
        self.method = method
        self._log = log or logging.getLogger("hubbub.plugins.oidc_auth")
        self.providers: dict[str, ProviderClient] = {
            block.name: ProviderClient(
                block,
                leeway=settings.leeway,
                refetch_interval=settings.jwks_refetch_interval,
                metadata_ttl=settings.metadata_ttl,
                log=self._log,
            )
            for block in providers
        }
        """The providers by name, the default one first."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()
            block = provider.settings
            if (
                isinstance(block, EntraProviderSettings)
                and block.tenant in MULTI_TENANT
                and not block.allowed_tenants
            ):
                self._log.warning(
                    "entra provider %s admits people of every tenant (tenant = %r and no "
                    "allowed_tenants): set allowed_tenants unless that is intended",
                    block.name,
                    block.tenant,
                    extra={"provider": block.name},
                )
        if self.providers:
            self._log.info(
                "%s sign-in through %s",
                self.method,
                ", ".join(f"{p.name} ({p.discovery_url})" for p in self.providers.values()),
            )

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()

    async def health(self) -> Health:
        if not self.providers:
            return Health(detail="no identity provider configured")
        parts = []
        degraded = False
        for provider in self.providers.values():
            if provider.problem is not None:
                degraded = True
                parts.append(f"{provider.name}: unavailable ({provider.problem})")
            elif provider.ready:
                parts.append(f"{provider.name}: discovery ok")
            else:
                parts.append(f"{provider.name}: not contacted yet")
        return Health(status="degraded" if degraded else "ok", detail="; ".join(parts))

    # -- the AuthMethod contract --------------------------------------------------------------

    async def authenticate(self, credentials: Credentials) -> Principal | None:
        """Always ``None``: after an OIDC login, callers present hubbub's session tokens,
        which the session manager checks; a provider's tokens are never accepted here."""
        return None

    async def is_provisioned(self) -> bool:
        """Whether at least one identity provider is configured."""
        return bool(self.providers)

    # -- the redirect flow ---------------------------------------------------------------------

    def provider(self, name: str) -> ProviderClient:
        """The provider named ``name`` (the first one for ``""``); :class:`NotFoundError`
        for an unknown name."""
        if not name and self.providers:
            return next(iter(self.providers.values()))
        found = self.providers.get(name)
        if found is None:
            known = ", ".join(self.providers) or "none is configured"
            raise NotFoundError(
                f"no identity provider {name!r} for {self.method} sign-in (known: {known})"
                if name
                else f"no identity provider for {self.method} sign-in: none is configured"
            )
        return found

    async def login_url(self, attempt: LoginAttempt) -> str:
        """Where to send the browser: the provider's authorization endpoint with the code
        flow's parameters, ``attempt``'s state and nonce, and the S256 challenge of its code
        verifier."""
        provider = self.provider(attempt.provider)
        try:
            return await provider.authorization_url(attempt)
        except IdentityProviderUnavailableError as exc:
            raise self._unavailable(exc) from None

    async def complete_login(self, attempt: LoginAttempt, params: dict[str, str]) -> Principal:
        """Exchange the callback's code, check the ID token, return who it signs in. Refusals
        are :class:`~hubbub_plugins.oidc_auth.errors.LoginRefusedError` (401, one message,
        the reason logged); a provider that cannot be reached is
        :class:`~hubbub_plugins.oidc_auth.errors.IdentityProviderUnavailableError` (503)."""
        provider = self.provider(attempt.provider)
        try:
            principal = await self._complete(provider, attempt, params)
        except LoginRefusedError as exc:
            self._log.warning(
                "%s sign-in through %s refused: %s",
                self.method,
                provider.name,
                exc.reason,
                extra={"method": self.method, "provider": provider.name, "reason": exc.reason},
            )
            raise
        except IdentityProviderUnavailableError as exc:
            raise self._unavailable(exc) from None
        self._log.info(
            "%s sign-in through %s: %s",
            self.method,
            provider.name,
            principal.id,
            extra={"method": self.method, "provider": provider.name, "principal": principal.id},
        )
        return principal

    async def _complete(
        self, provider: ProviderClient, attempt: LoginAttempt, params: Mapping[str, str]
    ) -> Principal:
        name = provider.name
        if attempt.method != self.method:
            raise LoginRefusedError(
                f"the login was started for method {attempt.method!r}", provider=name
            )
        error = params.get("error")
        if error is not None:
            description = params.get("error_description")
            raise LoginRefusedError(
                f"the provider answered error={_clip(error)}"
                + (f" ({_clip(description)})" if description else ""),
                provider=name,
            )
        state = params.get("state")
        if state is not None and not hmac.compare_digest(state.encode(), attempt.state.encode()):
            raise LoginRefusedError("the callback's state is not the login's", provider=name)
        code = params.get("code")
        if not code:
            raise LoginRefusedError("the callback carries no code", provider=name)
        metadata = await provider.metadata()
        issuer = params.get("iss")  # RFC 9207: which provider sent the browser back
        if (
            issuer is not None
            and TENANT_PLACEHOLDER not in metadata.issuer
            and issuer != metadata.issuer
        ):
            raise LoginRefusedError(
                f"the callback comes from issuer {_clip(issuer)}, not this provider's",
                provider=name,
            )
        id_token = await provider.exchange(attempt, code)
        claims = await provider.validate(id_token, attempt.nonce)
        check_admission(provider.settings, claims)
        return principal_for(provider.settings, claims, method=self.method, log=self._log)

    def _unavailable(
        self, exc: IdentityProviderUnavailableError
    ) -> IdentityProviderUnavailableError:
        """Log the outage once (the server then does not), and pass it on."""
        self._log.warning(
            "%s sign-in: %s",
            self.method,
            exc,
            extra={"method": self.method, "provider": exc.provider},
        )
        exc.reported = True
        return exc
