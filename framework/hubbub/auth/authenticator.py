"""Authentication across the enabled auth methods.

:class:`Authenticator` checks an access token (a JWT) against its login session
(:class:`~hubbub.auth.sessions.SessionManager`); other credentials go to the methods of
``[auth] methods``, in order. A method returns a
:class:`~hubbub.models.Principal` for credentials it accepts, ``None`` for credentials it does not
recognise (the next method is tried) and raises :class:`~hubbub.errors.AuthenticationError` for
credentials it recognises but rejects (expired, revoked, forged: no other method is tried).

**Local mode.** Until any enabled method is provisioned (has a key, a user or an identity
provider), a caller without credentials may be served as :data:`LOCAL_PRINCIPAL`, if the host
allows it: the reference server does so only when bound to loopback, and warns.

**Failing closed.** Given the data directory's :class:`~hubbub.auth.provisioning.
ProvisioningMarker`, the authenticator records there that credentials exist as soon as it finds
any, and from then on treats "no method is provisioned" as lost credentials
(:class:`~hubbub.auth.provisioning.CredentialsLostError`), never as local mode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import msgspec

from hubbub.auth.apikeys import ApiKeys
from hubbub.auth.provisioning import CredentialsLostError, ProvisioningMarker
from hubbub.auth.sessions import SessionManager
from hubbub.auth.tokens import TokenError
from hubbub.contracts import AuthMethod, Credentials
from hubbub.errors import AuthenticationError
from hubbub.models import Health, Principal

__all__ = ["LOCAL_PRINCIPAL", "Authenticator"]

logger = logging.getLogger("hubbub.auth")

LOCAL_PRINCIPAL = Principal(
    id="local", name="local user", roles=frozenset({"admin"}), auth_method="local-mode"
)
"""Who an unauthenticated caller is in local mode."""

_LOST_LOG_INTERVAL = 10.0
"""Seconds between two log lines about lost credentials while requests keep arriving."""


class Authenticator:
    """Authenticates callers with the enabled auth methods, in order."""

    def __init__(
        self,
        methods: Mapping[str, AuthMethod],
        *,
        allow_local: bool | None = None,
        provisioning_ttl: float = 2.0,
        marker: ProvisioningMarker | None = None,
        sessions: SessionManager | None = None,
        api_keys: ApiKeys | None = None,
    ) -> None:
        self.methods = dict(methods)
        self.sessions = sessions
        self.api_keys = api_keys
        """The API keys of the account store, for :meth:`still_valid`."""
        """Checks access tokens (JWTs) of login sessions, before any method is tried."""
        self.allow_local = allow_local
        """Whether local mode may apply at all. The host decides (the reference server: only
        when bound to loopback); ``None`` until it has, which counts as no."""
        self.provisioning_ttl = provisioning_ttl
        self.marker = marker
        """The data directory's record that credentials were ever set up (``None``: no data
        directory, nothing remembered)."""
        self._provisioned: tuple[float, bool] | None = None
        self._lost_logged_at = -_LOST_LOG_INTERVAL

    async def start(self) -> None:
        """Nothing to acquire: the methods are components of their own."""

    async def health(self) -> Health:
        mode = "local mode (no credentials set up)" if await self.local_mode() else "enforced"
        return Health(detail=f"{len(self.methods)} methods; {mode}")

    async def aclose(self) -> None:
        """Nothing to release."""

    async def is_provisioned(self) -> bool:
        """Whether any enabled method can authenticate someone (cached for a moment).

        Raises :class:`~hubbub.auth.provisioning.CredentialsLostError` when none can although
        the marker says credentials were set up (a method raises it too when its own store is
        gone): the caller must refuse to serve, not fall back to local mode."""
        cached = self._provisioned
        if cached is not None and time.monotonic() - cached[0] < self.provisioning_ttl:
            return cached[1]
        provisioned = None
        for name, method in self.methods.items():
            if await method.is_provisioned():
                provisioned = name
                break
        marker = self.marker
        if marker is not None:
            if provisioned is None and marker.exists():
                enabled = ", ".join(self.methods) or "none"
                raise marker.lost(
                    f"no enabled auth method has any credentials (enabled: {enabled})"
                )
            if provisioned is not None and not marker.exists():
                try:
                    marker.record(provisioned, "")
                except OSError as exc:
                    logger.warning(
                        "cannot record that credentials exist in %s: %s", marker.path, exc
                    )
        self._provisioned = (time.monotonic(), provisioned is not None)
        return provisioned is not None

    async def local_mode(self) -> bool:
        """Whether callers without credentials are served as :data:`LOCAL_PRINCIPAL` now."""
        return self.allow_local is True and not await self.is_provisioned()

    async def still_valid(self, principal: Principal) -> bool:
        """Whether the credential ``principal`` was authenticated with still holds: its login
        session, or its API key (``True`` for credentials that cannot end on their own: local
        mode, a plugin's method). What a long-lived stream asks at every heartbeat."""
        if principal.session_id is not None and self.sessions is not None:
            return await self.sessions.alive(principal)
        if principal.auth_method == "api_key" and principal.credential_id is not None:
            return self.api_keys is None or await self.api_keys.alive(principal.credential_id)
        return True

    async def authenticate(self, credentials: Credentials) -> Principal:
        """The caller these credentials prove, :data:`LOCAL_PRINCIPAL` in local mode, or
        :class:`AuthenticationError`; :class:`CredentialsLostError` (whose message names no
        file: it goes to the caller, the details go to the log) when credentials were lost."""
        try:
            return await self._authenticate(credentials)
        except CredentialsLostError as exc:
            now = time.monotonic()
            if now - self._lost_logged_at > _LOST_LOG_INTERVAL:
                self._lost_logged_at = now
                logger.error("refusing requests: %s", exc)
            raise CredentialsLostError(
                "the server's credentials are unavailable: it refuses requests until its "
                "operator restores them (the server log says how)"
            ) from None

    @staticmethod
    def _named(principal: Principal, method: str) -> Principal:
        if principal.auth_method:
            return principal
        return msgspec.structs.replace(principal, auth_method=method)

    async def _authenticate(self, credentials: Credentials) -> Principal:
        bearer = credentials.bearer
        sessions = self.sessions
        if bearer is not None and sessions is not None and sessions.is_access_token(bearer):
            try:
                return await sessions.authenticate(bearer)
            except TokenError as exc:
                logger.info("access token refused: %s", exc.reason, extra={"reason": exc.reason})
                # Not hubbub's token, perhaps: a method of a plugin may know it (another
                # issuer's JWT); if none does, the refusal stands.
                for name, method in self.methods.items():
                    principal = await method.authenticate(credentials)
                    if principal is not None:
                        return self._named(principal, name)
                raise
        presented = bearer is not None or credentials.username is not None
        if presented:
            for name, method in self.methods.items():
                principal = await method.authenticate(credentials)
                if principal is not None:
                    return self._named(principal, name)
        if await self.local_mode():
            return LOCAL_PRINCIPAL
        if presented:
            raise AuthenticationError("the credentials were not accepted")
        raise AuthenticationError("authentication required: send Authorization: Bearer <key>")
