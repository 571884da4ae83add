"""Logins: how a caller gets a session, whatever the method.

* :meth:`Logins.password` (``POST /api/auth/login``): the user name and password go to the
  enabled methods that check passwords (``local``; a plugin's LDAP method...), in order; the
  first to accept them names the principal. Failed attempts are limited per account and per
  address (:mod:`hubbub.auth.limits`); every failure gives the caller the same message, and the
  log the reason (never the password).
* :meth:`Logins.begin_redirect` and :meth:`Logins.finish_redirect` (``GET /api/auth/{method}/
  login`` and ``/callback``): a :class:`~hubbub.contracts.LoginAttempt` with fresh random
  state, nonce and PKCE verifier is kept in the cache (shared by every process when it is
  Redis) for ``ATTEMPT_TTL`` seconds and used once; the caller binds it to the browser with a
  cookie holding the state.

Both end in :meth:`SessionManager.open <hubbub.auth.sessions.SessionManager.open>`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping

import msgspec

from hubbub.auth.authenticator import Authenticator
from hubbub.auth.limits import LoginLimiter
from hubbub.auth.sessions import SessionManager, SessionTokens
from hubbub.auth.users import Users, is_user_name
from hubbub.contracts import CacheBackend, Credentials, LoginAttempt, RedirectAuthMethod
from hubbub.errors import AuthenticationError, NotFoundError
from hubbub.models import Health, Principal

__all__ = ["ATTEMPT_TTL", "LoginFailedError", "Logins"]

logger = logging.getLogger("hubbub.auth")

ATTEMPT_TTL = 600.0
"""Seconds a sign-in through another site may take."""

_ATTEMPT = msgspec.json.Decoder(LoginAttempt)


class LoginFailedError(AuthenticationError):
    """A login was refused (the reason is in the log, not in the message)."""

    code = "login_failed"


def _redirect_method(methods: Mapping[str, object], name: str) -> RedirectAuthMethod:
    redirect_members = {"login_url", "complete_login"}
    method = methods.get(name)
    if method is None or not all(hasattr(method, m) for m in redirect_members):
        raise NotFoundError(f"there is no sign-in method {name!r} that redirects")
    return method  # type: ignore[return-value]


class Logins:
    """Turns credentials into sessions."""

    def __init__(
        self,
        authenticator: Authenticator,
        sessions: SessionManager,
        cache: CacheBackend,
        limiter: LoginLimiter,
        users: Users | None = None,
    ) -> None:
        self.users = users
        """Where people signed in by an identity provider get an account (so they can be
        listed and disabled)."""
        self.authenticator = authenticator
        self.sessions = sessions
        self.cache = cache
        self.limiter = limiter

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        return Health(detail="password and redirect logins")

    async def aclose(self) -> None:
        """Nothing to release."""

    async def password(
        self,
        username: str,
        password: str,
        *,
        method: str | None = None,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> SessionTokens:
        """A new session for the account ``username`` if ``password`` is right, checked by
        ``method`` (else by each enabled method in turn)."""
        await self.limiter.attempt(username, ip)
        methods = self.authenticator.methods
        if method is not None and method not in methods:
            raise NotFoundError(f"there is no enabled sign-in method {method!r}")
        names = [method] if method is not None else list(methods)
        credentials = Credentials(username=username, password=password)
        reasons = []
        for name in names:
            try:
                principal = await methods[name].authenticate(credentials)
            except AuthenticationError as exc:  # refused here: another method may know them
                reasons.append(f"{name}: {getattr(exc, 'reason', '') or exc}")
                continue
            if principal is None:
                continue
            tokens = await self.sessions.open(principal, method=name, user_agent=user_agent, ip=ip)
            await self._still_admitted(principal, tokens)
            await self.limiter.succeeded(username, ip)
            return tokens
        reason = "; ".join(reasons) or "no enabled method checks passwords"
        shown = username[:64] if is_user_name(username) else "<not a user name>"
        logger.warning(
            "login failed for %r from %s: %s",
            shown,
            ip or "an unknown address",
            reason,
            extra={"reason": reason, "address": ip},
        )
        raise LoginFailedError("the user name or password is not right")

    async def _still_admitted(self, principal: Principal, tokens: SessionTokens) -> None:
        """Read the account again once its session exists: an account disabled (or whose
        roles changed) while its password was being checked does not keep the session. (The
        change's own revocation lists sessions after it is written, so between the two, no
        session slips through.)"""
        if self.users is None:
            return
        item = await self.users.records.get(principal.id)
        if item is None:
            return  # not a local account (a plugin's method): nothing to compare
        user = item.value
        if user.disabled or user.roles != principal.roles:
            await self.sessions.revoke(tokens.session.id)
            reason = "account disabled" if user.disabled else "roles changed during login"
            logger.warning("login of %s undone: %s", principal.id, reason)
            raise LoginFailedError("the user name or password is not right")

    async def begin_redirect(
        self, method: str, *, provider: str = "", redirect_uri: str, ip: str | None = None
    ) -> tuple[str, LoginAttempt]:
        """Where to send the browser to sign in with ``method`` (and its ``provider``), and
        the attempt to bind to the browser (its ``state`` goes in a cookie). Starts are
        limited per client address like failed logins."""
        auth = _redirect_method(self.authenticator.methods, method)
        await self.limiter.redirect_started(ip)
        attempt = LoginAttempt(
            method=method,
            provider=provider,
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(48),
            redirect_uri=redirect_uri,
        )
        url = await auth.login_url(attempt)
        await self.cache.set(
            f"hubbub:login:attempt:{attempt.state}", msgspec.json.encode(attempt), ATTEMPT_TTL
        )
        return url, attempt

    async def finish_redirect(
        self,
        method: str,
        params: dict[str, str],
        *,
        cookie_state: str | None,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> SessionTokens:
        """The session for a completed sign-in: ``params`` are the callback's query, whose
        ``state`` must be the browser's (``cookie_state``) and an attempt not used yet."""
        auth = _redirect_method(self.authenticator.methods, method)
        state = params.get("state", "")
        if not state or cookie_state is None or not secrets.compare_digest(state, cookie_state):
            raise self._refused(method, "state missing or not this browser's")
        key = f"hubbub:login:attempt:{state}"
        raw = await self.cache.get(key)
        if raw is None or not await self.cache.delete(key):
            raise self._refused(method, "unknown, expired or used state")
        try:
            attempt = _ATTEMPT.decode(raw)
        except msgspec.DecodeError:
            raise self._refused(method, "unreadable login attempt") from None
        if attempt.method != method:
            raise self._refused(method, "state of another method")
        try:
            principal = await auth.complete_login(attempt, params)
            changed = self.users is not None and await self.users.admit(principal, method)
        except AuthenticationError as exc:
            raise self._refused(method, str(getattr(exc, "reason", "")) or str(exc)) from None
        if changed:  # the provider gives other roles now: sessions holding the old ones end
            await self.sessions.revoke_all(principal.id)
        tokens = await self.sessions.open(principal, method=method, user_agent=user_agent, ip=ip)
        await self._still_admitted(principal, tokens)
        return tokens

    @staticmethod
    def _refused(method: str, reason: str) -> LoginFailedError:
        logger.warning("sign-in with %s refused: %s", method, reason, extra={"reason": reason})
        return LoginFailedError("the sign-in could not be completed: start again")
