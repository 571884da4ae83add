"""Sign-in and sessions under ``/api/auth``, and the public signing keys.

* ``POST /api/auth/login`` ``{"username", "password"}``: a session's first tokens.
* ``POST /api/auth/refresh`` ``{"refresh_token"}``: the next pair (the token sent is used up;
  sending it again ends the session).
* ``POST /api/auth/logout`` (``?all=true``: every session of the caller): ends the session the
  access token belongs to.
* ``GET /api/auth/sessions``, ``DELETE /api/auth/sessions/{id}``: the caller's sessions (another
  user's session is a 404).
* ``GET /api/auth/{method}/login`` and ``/callback``: sign-in through another site (OIDC, Entra
  ID); the attempt is bound to the browser by an ``HttpOnly`` cookie holding its state.
* ``GET /.well-known/jwks.json``: the public keys access tokens are signed with.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import CacheControlHeader, Cookie
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Redirect

from hubbub.auth.scopes import SESSIONS, require_scope
from hubbub.auth.sessions import SessionTokens
from hubbub.errors import InvalidRequestError, NotFoundError
from hubbub.models import Session
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep

__all__ = ["AuthController", "jwks"]

NO_STORE = CacheControlHeader(no_store=True)
"""Answers carrying tokens are never stored by a cache (RFC 6749, 5.1)."""

STATE_COOKIE = "hubbub_login_state"
"""The cookie that binds a redirect sign-in to the browser that started it."""


class LoginBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/auth/login``."""

    username: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    """The account's name (any case)."""
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=65_536)]
    """Its password."""
    method: str | None = None
    """The sign-in method that checks it (default: each enabled one in turn)."""


class RefreshBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/auth/refresh``."""

    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    """The refresh token of the last login or refresh (usable once)."""


class SessionView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One of the caller's sessions."""

    session: Session
    """The session."""
    current: bool = False
    """Whether the request was made with this session's access token."""


class SessionList(msgspec.Struct, kw_only=True):
    """Body of ``GET /api/auth/sessions``."""

    sessions: list[SessionView]
    """The caller's sessions, most recently used first."""


class LoggedOut(msgspec.Struct, kw_only=True):
    """Body of ``POST /api/auth/logout``'s answer."""

    revoked: int
    """How many sessions ended."""


def _client(request: Request[Any, Any, Any]) -> tuple[str | None, str | None]:
    """The client's user agent and address (``None`` for an address that is none: what a
    misconfigured proxy may forward is never stored or used as a key)."""
    client = request.scope.get("client")
    address = client[0] if client else None
    try:
        address = str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        address = None
    return request.headers.get("user-agent"), address


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]

    @post(
        "/login",
        summary="Sign in with a user name and password",
        status_code=200,
        cache_control=NO_STORE,
        responses=PROBLEM_RESPONSES,
    )
    async def login(
        self, runtime: RuntimeDep, request: Request[Any, Any, Any], data: JSONBody[LoginBody]
    ) -> SessionTokens:
        agent, address = _client(request)
        return await runtime.logins.password(
            data.username, data.password, method=data.method, user_agent=agent, ip=address
        )

    @post(
        "/refresh",
        summary="Exchange a refresh token for new tokens",
        status_code=200,
        cache_control=NO_STORE,
        responses=PROBLEM_RESPONSES,
    )
    async def refresh(self, runtime: RuntimeDep, data: JSONBody[RefreshBody]) -> SessionTokens:
        return await runtime.sessions.refresh(data.refresh_token)

    @post(
        "/logout",
        summary="End this session (or, with all=true, every session of yours)",
        status_code=200,
        responses=PROBLEM_RESPONSES,
    )
    async def logout(
        self,
        runtime: RuntimeDep,
        principal: Caller,
        all_sessions: Annotated[
            bool, QueryParameter(name="all", description="End every session of yours.")
        ] = False,
    ) -> LoggedOut:
        require_scope(principal, SESSIONS)
        sessions = runtime.sessions
        if all_sessions:
            return LoggedOut(revoked=await sessions.revoke_all(principal.id))
        if principal.session_id is None:
            raise InvalidRequestError(
                "these credentials belong to no session (an API key?): "
                "use ?all=true to end all your sessions"
            )
        ended = await sessions.revoke(principal.session_id, owner=principal.id)
        return LoggedOut(revoked=int(ended))

    @get("/sessions", summary="List your sessions", responses=PROBLEM_RESPONSES)
    async def list_sessions(self, runtime: RuntimeDep, principal: Caller) -> SessionList:
        require_scope(principal, SESSIONS)
        sessions = await runtime.sessions.list(principal.id)
        return SessionList(
            sessions=[
                SessionView(session=s, current=s.id == principal.session_id) for s in sessions
            ]
        )

    @delete(
        "/sessions/{session_id:str}",
        summary="End one of your sessions",
        responses=PROBLEM_RESPONSES,
    )
    async def revoke_session(
        self, runtime: RuntimeDep, principal: Caller, session_id: FromPath[str]
    ) -> None:
        require_scope(principal, SESSIONS)
        if not await runtime.sessions.revoke(session_id, owner=principal.id):
            raise NotFoundError(f"you have no session {session_id!r}")

    @get(
        "/{method:str}/login",
        summary="Sign in through another site (OIDC, Entra ID)",
        status_code=302,
        responses=PROBLEM_RESPONSES,
    )
    async def redirect_login(
        self,
        runtime: RuntimeDep,
        request: Request[Any, Any, Any],
        method: FromPath[str],
        provider: Annotated[
            str, QueryParameter(max_length=64, description="Which identity provider.")
        ] = "",
    ) -> Redirect:
        callback = str(request.url_for("hubbub-auth-callback", method=method))
        url, attempt = await runtime.logins.begin_redirect(
            method, provider=provider, redirect_uri=callback, ip=_client(request)[1]
        )
        cookie = Cookie(
            key=STATE_COOKIE,
            value=attempt.state,
            max_age=600,
            path="/api/auth",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return Redirect(url, cookies=[cookie])

    @get(
        "/{method:str}/callback",
        name="hubbub-auth-callback",
        summary="Where the other site sends the browser back",
        cache_control=NO_STORE,
        responses=PROBLEM_RESPONSES,
    )
    async def redirect_callback(
        self, runtime: RuntimeDep, request: Request[Any, Any, Any], method: FromPath[str]
    ) -> Response[SessionTokens]:
        agent, address = _client(request)
        params = dict(request.query_params.items())
        tokens = await runtime.logins.finish_redirect(
            method,
            params,
            cookie_state=request.cookies.get(STATE_COOKIE),
            user_agent=agent,
            ip=address,
        )
        response = Response(tokens)
        response.delete_cookie(STATE_COOKIE, path="/api/auth")
        return response


@get(
    "/.well-known/jwks.json",
    summary="The public keys access tokens are signed with",
    tags=["auth"],
    include_in_schema=True,
)
async def jwks(runtime: RuntimeDep) -> dict[str, Any]:
    return runtime.sessions.keyring.jwks()
