"""OAuth 2 client credentials for HTTP MCP servers: a token fetched from the configured token
endpoint (authlib), cached until shortly before it expires, sent as ``Authorization: Bearer``
to that one server; a ``401`` answer refreshes it once and retries."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx2

from hubbub.config import McpOAuthConfig
from hubbub.errors import HubbubError
from hubbub.redaction import describe_error

__all__ = ["BearerAuth", "ClientCredentials", "TokenError"]

REFRESH_MARGIN = 30.0
"""Seconds before its expiry a cached token is replaced (a tenth of its lifetime when that is
shorter)."""


class TokenError(HubbubError):
    """The token endpoint refused to give a token, or could not be reached."""

    status = 502
    code = "mcp_token_error"


class ClientCredentials:
    """Access tokens for one MCP server from an OAuth 2 token endpoint (client credentials
    grant), cached until shortly before they expire.

    :param config: the server's ``[mcp.servers.oauth]`` table.
    :param timeout: seconds one token request may take.
    :param logger: where token fetches are logged (never the token).
    """

    def __init__(
        self, config: McpOAuthConfig, *, timeout: float, logger: logging.Logger | None = None
    ) -> None:
        self.config = config
        self.timeout = timeout
        self._log = logger or logging.getLogger("hubbub.tools.mcp")
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0
        """How many tokens were fetched (for tests and health)."""

    async def token(self, *, stale: str | None = None) -> str:
        """A valid access token: the cached one unless it is about to expire, or is ``stale``
        (the one a server just refused), in which case a new one is fetched."""
        async with self._lock:
            if (
                self._token is not None
                and self._token != stale
                and time.monotonic() < self._expires_at
            ):
                return self._token
            self._token, self._expires_at = await self._fetch()
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        config = self.config
        secret = config.client_secret.reveal() if config.client_secret is not None else None
        extra: dict[str, Any] = {}
        if config.audience:
            extra["audience"] = config.audience
        from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
            AsyncOAuth2Client,
        )

        try:
            async with AsyncOAuth2Client(
                client_id=config.client_id,
                client_secret=secret,
                scope=config.scope,
                timeout=self.timeout,
            ) as client:
                token = await client.fetch_token(
                    config.token_url, grant_type="client_credentials", **extra
                )
        except Exception as exc:
            raise TokenError(
                f"could not get a token from {config.token_url}: {describe_error(exc)}"
            ) from exc
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenError(f"the token endpoint {config.token_url} sent no access_token")
        now = time.monotonic()
        lifetime = token.get("expires_in")
        if isinstance(lifetime, int | float) and lifetime > 0:
            expires_at = now + lifetime - min(REFRESH_MARGIN, lifetime / 10)
        else:
            expires_at = float("inf")
        self.fetched += 1
        self._log.info("fetched an OAuth token from %s", config.token_url)
        return access, expires_at


class BearerAuth(httpx2.Auth):
    """Sends the token of a :class:`ClientCredentials` with every request; on a ``401`` it
    gets a fresh token and sends the request once more."""

    def __init__(self, credentials: ClientCredentials) -> None:
        self.credentials = credentials

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self.credentials.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = await self.credentials.token(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
