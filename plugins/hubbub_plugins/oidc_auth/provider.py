"""One identity provider at run time: its HTTP client (authlib's async OAuth 2 client, an
httpx-style ``AsyncClient``), its discovery document and keys read lazily and cached, the
authorization request, the code exchange and the ID token check.

Keys are re-read when an ID token names a key hubbub does not know (or, for a provider whose
tokens name no ``kid``, when no known key verifies it): the provider rotated its keys. That
re-read happens at most once per ``jwks_refetch_interval`` seconds, however many such tokens
arrive; after it, a token still without a key is refused.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from hubbub.contracts import LoginAttempt
from hubbub.redaction import describe_error
from hubbub_plugins.oidc_auth.errors import IdentityProviderUnavailableError, LoginRefusedError
from hubbub_plugins.oidc_auth.settings import (
    GUID,
    EntraProviderSettings,
    OidcProviderSettings,
    ProviderSettings,
    check_url,
    is_loopback,
)
from hubbub_plugins.oidc_auth.validation import (
    KeySet,
    NoKeyVerifiedError,
    allowed_algorithms,
    check_claims,
    read_header,
    unverified_claims,
    verify_signature_and_times,
)

__all__ = ["Metadata", "ProviderClient"]

TENANT_PLACEHOLDER = "{tenantid}"
"""What Entra ID's multi-tenant discovery documents put in ``issuer`` for the tenant."""


class Metadata(msgspec.Struct, kw_only=True, frozen=True):
    """What hubbub reads of a provider's discovery document."""

    issuer: str
    """The issuer every ID token must name (for Entra ID's multi-tenant endpoints, with
    ``{tenantid}`` in place of the token's ``tid``)."""
    authorization_endpoint: str
    """Where the browser is sent to sign in."""
    token_endpoint: str
    """Where the authorization code is exchanged for the ID token."""
    jwks_uri: str
    """The provider's public signing keys."""
    id_token_signing_alg_values_supported: list[str] = msgspec.field(
        default_factory=lambda: ["RS256"]
    )
    """The algorithms the provider signs ID tokens with."""
    token_endpoint_auth_methods_supported: list[str] = msgspec.field(
        default_factory=lambda: ["client_secret_basic"]
    )
    """How the provider lets clients authenticate at the token endpoint."""


def _check_endpoint(url: str, what: str) -> None:
    parts = urlsplit(url)
    secure = parts.scheme == "https" or (
        parts.scheme == "http" and is_loopback(parts.hostname or "")
    )
    if not parts.hostname or not secure:
        raise ValueError(f"{what} {url!r} is not an https:// URL")


def http_library(client: Any) -> Any:
    """The module of the httpx-style library ``client`` is built on, whose exceptions it
    raises: authlib's client builds on ``httpx2`` when that is installed, else on ``httpx``."""
    for cls in type(client).__mro__:
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.split(".")[0])
    return httpx  # pragma: no cover - authlib's client is always an AsyncClient


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class ProviderClient:
    """One configured identity provider, used by the ``oidc`` or ``entra`` method.

    :param settings: its settings block.
    :param leeway: seconds of clock difference tolerated for ``exp``, ``iat`` and ``nbf``.
    :param refetch_interval: at least this many seconds between two re-reads of the keys
        caused by tokens with an unknown key.
    :param metadata_ttl: seconds the discovery document and the keys are kept.
    :param log: where refusals and re-reads are logged.
    :param clock: monotonic seconds (tests may pass their own).

    Its discovery document is read from :attr:`discovery_url`: ``<issuer>/.well-known/
    openid-configuration`` for a generic provider, ``<authority>/<tenant>/v2.0/.well-known/
    openid-configuration`` for Entra ID.
    """

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        leeway: float = 30.0,
        refetch_interval: float = 60.0,
        metadata_ttl: float = 3600.0,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        """The provider's configured name."""
        self.leeway = leeway
        self.refetch_interval = refetch_interval
        self.metadata_ttl = metadata_ttl
        self._log = log or logging.getLogger("hubbub.plugins.oidc_auth")
        self._clock = clock
        if isinstance(settings, EntraProviderSettings):
            self.discovery_url = settings.discovery_url
        elif isinstance(settings, OidcProviderSettings):
            issuer = check_url(settings.issuer, "issuer")
            self.discovery_url = f"{issuer}/.well-known/openid-configuration"
        else:  # pragma: no cover - the two kinds above are all there is
            raise TypeError(f"unknown provider settings {type(settings).__name__}")
        self._client: Any = None
        self._lib: Any = httpx
        self._metadata: tuple[float, Metadata] | None = None
        self._keys: tuple[float, KeySet] | None = None
        self._refetched_at = -math.inf
        self._metadata_lock = asyncio.Lock()
        self._keys_lock = asyncio.Lock()
        self.problem: str | None = None
        """What went wrong the last time the provider was asked, until it answers again."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the HTTP client (nothing is fetched yet: discovery is lazy)."""
        from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
            AsyncOAuth2Client,
        )

        secret = self.settings.client_secret
        self._client = AsyncOAuth2Client(
            client_id=self.settings.client_id,
            client_secret=secret.reveal() if secret is not None else None,
            code_challenge_method="S256",
            timeout=self.settings.timeout,
            follow_redirects=False,
        )
        self._lib = http_library(self._client)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def ready(self) -> bool:
        """Whether the discovery document has been read."""
        return self._metadata is not None

    # -- discovery and keys ------------------------------------------------------------------

    def _unavailable(self, problem: str) -> IdentityProviderUnavailableError:
        self.problem = problem
        return IdentityProviderUnavailableError(self.name, problem)

    def _http(self) -> Any:
        if self._client is None:
            raise self._unavailable("the auth method is not started")
        return self._client

    async def _get(self, url: str, what: str) -> bytes:
        try:
            response = await self._http().request(
                "GET", url, withhold_token=True, headers={"Accept": "application/json"}
            )
        except self._lib.TimeoutException:
            raise self._unavailable(
                f"its {what} did not answer within {self.settings.timeout:g} s"
            ) from None
        except self._lib.HTTPError as exc:
            raise self._unavailable(f"cannot read its {what} ({describe_error(exc)})") from None
        if response.status_code != 200:
            raise self._unavailable(f"its {what} answered HTTP {response.status_code}")
        return bytes(response.content)

    async def metadata(self) -> Metadata:
        """The discovery document (read on first use, then every ``metadata_ttl`` seconds)."""
        cached = self._metadata
        if cached is not None and self._clock() - cached[0] < self.metadata_ttl:
            return cached[1]
        async with self._metadata_lock:
            cached = self._metadata
            if cached is not None and self._clock() - cached[0] < self.metadata_ttl:
                return cached[1]
            body = await self._get(self.discovery_url, "discovery document")
            try:
                metadata = msgspec.json.decode(body, type=Metadata)
                self._check(metadata)
            except (msgspec.DecodeError, ValueError) as exc:
                message = str(exc).replace("`", "'")
                raise self._unavailable(f"its discovery document is not valid: {message}") from None
            self._metadata = (self._clock(), metadata)
            self.problem = None
            self._log.info(
                "read the discovery document of identity provider %s",
                self.name,
                extra={"provider": self.name, "issuer": metadata.issuer},
            )
            return metadata

    def _check(self, metadata: Metadata) -> None:
        settings = self.settings
        if isinstance(settings, OidcProviderSettings):
            wrong = metadata.issuer.rstrip("/") != settings.issuer.rstrip("/")
            where = f"the configured {settings.issuer!r}"
        elif isinstance(settings, EntraProviderSettings):
            wrong = _origin(metadata.issuer) != _origin(settings.authority)
            where = f"at the authority {settings.authority!r}"
        else:  # pragma: no cover - the two kinds of settings are all there is
            raise TypeError(type(settings).__name__)
        if wrong:
            raise ValueError(f"it names issuer {metadata.issuer!r}, not {where}")
        _check_endpoint(metadata.issuer, "issuer")
        _check_endpoint(metadata.authorization_endpoint, "authorization_endpoint")
        _check_endpoint(metadata.token_endpoint, "token_endpoint")
        _check_endpoint(metadata.jwks_uri, "jwks_uri")
        if not allowed_algorithms(metadata.id_token_signing_alg_values_supported):
            raise ValueError(
                "it signs ID tokens with no public-key algorithm (offered: "
                + ", ".join(metadata.id_token_signing_alg_values_supported)
                + "; none and HS* are refused)"
            )

    async def keys(self) -> KeySet:
        """The provider's signing keys (read on first use, then every ``metadata_ttl``
        seconds, or again through :meth:`refetch_keys`)."""
        cached = self._keys
        if cached is not None and self._clock() - cached[0] < self.metadata_ttl:
            return cached[1]
        async with self._keys_lock:
            cached = self._keys
            if cached is not None and self._clock() - cached[0] < self.metadata_ttl:
                return cached[1]
            return await self._read_keys()

    async def refetch_keys(self) -> KeySet | None:
        """Read the keys again because a token did not fit the known ones; ``None`` when they
        were re-read for that reason less than ``refetch_interval`` seconds ago (the known
        keys stand)."""
        asked_at = self._clock()
        async with self._keys_lock:
            cached = self._keys
            if cached is not None and cached[0] >= asked_at:
                return cached[1]  # re-read by another login while this one waited
            if asked_at - self._refetched_at < self.refetch_interval:
                return None
            self._refetched_at = asked_at
            self._log.info(
                "reading the keys of identity provider %s again (a token named an unknown key)",
                self.name,
                extra={"provider": self.name},
            )
            return await self._read_keys()

    async def _read_keys(self) -> KeySet:
        metadata = await self.metadata()
        body = await self._get(metadata.jwks_uri, "key set")
        try:
            keys = KeySet(json.loads(body))
        except ValueError as exc:
            raise self._unavailable(f"its key set is not valid: {exc}") from None
        self._keys = (self._clock(), keys)
        self.problem = None
        return keys

    # -- the login -----------------------------------------------------------------------------

    async def authorization_url(self, attempt: LoginAttempt) -> str:
        """The authorization request for ``attempt``: code flow, its state and nonce, the S256
        challenge of its code verifier."""
        metadata = await self.metadata()
        url, _ = self._http().create_authorization_url(
            metadata.authorization_endpoint,
            state=attempt.state,
            code_verifier=attempt.code_verifier,
            nonce=attempt.nonce,
            redirect_uri=attempt.redirect_uri,
            scope=" ".join(self.settings.scopes),
            **self.settings.authorize_params,
        )
        return str(url)

    def _client_auth_method(self, metadata: Metadata) -> str:
        if self.settings.client_secret is None:
            return "none"
        offered = metadata.token_endpoint_auth_methods_supported
        if "client_secret_basic" not in offered and "client_secret_post" in offered:
            return "client_secret_post"
        return "client_secret_basic"

    async def exchange(self, attempt: LoginAttempt, code: str) -> str:
        """Exchange the authorization ``code`` (with the PKCE verifier) for the ID token."""
        from authlib.integrations.base_client import OAuthError  # type: ignore[import-untyped]

        metadata = await self.metadata()
        client = self._http()
        try:
            token = await client.fetch_token(
                metadata.token_endpoint,
                grant_type="authorization_code",
                code=code,
                redirect_uri=attempt.redirect_uri,
                code_verifier=attempt.code_verifier,
                auth=client.client_auth(self._client_auth_method(metadata)),
            )
        except OAuthError as exc:
            raise LoginRefusedError(
                f"the token endpoint refused the code: {exc.error}", provider=self.name
            ) from None
        except self._lib.TimeoutException:
            raise self._unavailable(
                f"its token endpoint did not answer within {self.settings.timeout:g} s"
            ) from None
        except self._lib.HTTPStatusError as exc:
            status = exc.response.status_code
            if status >= 500:
                raise self._unavailable(f"its token endpoint answered HTTP {status}") from None
            raise LoginRefusedError(
                f"the token endpoint answered HTTP {status}", provider=self.name
            ) from None
        except self._lib.HTTPError as exc:
            raise self._unavailable(
                f"cannot reach its token endpoint ({describe_error(exc)})"
            ) from None
        except ValueError:
            raise self._unavailable("its token endpoint did not answer with JSON") from None
        finally:
            client.token = None  # keep no one's tokens in the shared client
        self.problem = None
        id_token = token.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise LoginRefusedError("the token endpoint sent no ID token", provider=self.name)
        return id_token

    def _issuer_for(self, metadata: Metadata, claims: dict[str, Any]) -> str:
        if isinstance(self.settings, EntraProviderSettings) and TENANT_PLACEHOLDER in (
            metadata.issuer
        ):
            tid = claims.get("tid")
            if not isinstance(tid, str) or not GUID.match(tid):
                raise LoginRefusedError(
                    "ID token without a valid tid for a multi-tenant issuer", provider=self.name
                )
            return metadata.issuer.replace(TENANT_PLACEHOLDER, tid)
        return metadata.issuer

    async def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The claims of ``id_token`` once every check has passed (see
        :mod:`~hubbub_plugins.oidc_auth.validation`); re-reads the keys once if the token's
        key is unknown."""
        metadata = await self.metadata()
        algorithms = allowed_algorithms(metadata.id_token_signing_alg_values_supported)
        alg, kid = read_header(id_token, algorithms, self.name)
        issuer = self._issuer_for(metadata, unverified_claims(id_token, self.name))

        def verify(keys: KeySet) -> dict[str, Any]:
            return verify_signature_and_times(
                id_token,
                keys.candidates(alg, kid),
                alg,
                issuer=issuer,
                audience=self.settings.client_id,
                leeway=self.leeway,
                provider=self.name,
            )

        try:
            claims = verify(await self.keys())
        except NoKeyVerifiedError as exc:
            fresh = await self.refetch_keys()
            if fresh is None:
                raise LoginRefusedError(
                    f"{exc.reason} (kid {kid!r}; keys re-read less than "
                    f"{self.refetch_interval:g} s ago)",
                    provider=self.name,
                ) from None
            try:
                claims = verify(fresh)
            except NoKeyVerifiedError as again:
                raise LoginRefusedError(
                    f"{again.reason} (kid {kid!r}; also after re-reading the keys)",
                    provider=self.name,
                ) from None
        check_claims(claims, client_id=self.settings.client_id, nonce=nonce, provider=self.name)
        return claims
