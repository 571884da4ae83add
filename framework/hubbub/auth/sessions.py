"""The session manager: every login, whatever its method, ends here.

:meth:`SessionManager.open` turns a :class:`~hubbub.models.Principal` into a login session kept
in the account store (so every process sharing it agrees) and hands out a pair of tokens:

* an **access token**, a short-lived JWT signed by the keyring (:mod:`hubbub.auth.tokens`),
  carrying only identifiers (``sub``, ``sid``, ``scope``...), never a secret;
* a **refresh token**, opaque (``hbr_<session id>.<secret>``), stored only as a SHA-256 digest,
  exchanged by :meth:`SessionManager.refresh` for a new pair and replaced on every use. A
  refresh token used a second time means it was copied: the whole session ends (reuse
  detection), and so does every token it issued.

Every request with an access token is checked against its session (:meth:`~SessionManager.
authenticate`): a process trusts a session it has checked for ``[sessions] check_interval``
(1 s), and forgets it at once when a :class:`~hubbub.events.SessionRevoked` event arrives
through the event log from any process. Revoking a session therefore refuses its tokens
everywhere within a second, and ends the event streams it opened.

Sessions end after ``idle_timeout`` without use or ``absolute_timeout`` after login; a cleanup
task purges ended ones from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from hubbub.auth.keyfiles import KeyringSource
from hubbub.auth.records import Item, Records
from hubbub.auth.tokens import Keyring, TokenError
from hubbub.config import SessionsConfig
from hubbub.contracts import AccountStore
from hubbub.errors import AuthenticationError, ConflictError, NotFoundError
from hubbub.events import EventBus, SessionRevoked
from hubbub.models import Health, Principal, Session

__all__ = ["REFRESH_PREFIX", "SessionManager", "SessionTokens", "StoredSession"]

logger = logging.getLogger("hubbub.auth")

REFRESH_PREFIX = "hbr_"
"""How a hubbub refresh token starts."""

_USED_KEPT = 32
"""Digests of rotated-away refresh tokens a session remembers, to recognise reuse."""

_CHECKED_KEPT = 10_000
"""Sessions a process remembers as checked (the most recently used)."""

_PURGE_BATCH = 500

KEYRING_POLL = 5.0
"""Seconds between two looks at the keyring file (a rotation reaches every process)."""


class StoredSession(msgspec.Struct, kw_only=True, frozen=True):
    """A session as the account store keeps it."""

    session: Session
    """What its owner sees (``expires_at``: when it ends unless used again)."""
    name: str = ""
    """The principal's display name."""
    roles: frozenset[str] = frozenset()
    """The principal's roles at login."""
    scopes: frozenset[str] = frozenset()
    """What the session's tokens may do; empty: whatever the roles allow."""
    ends_at: float
    """The absolute end (login plus ``absolute_timeout``)."""
    refresh_digest: str
    """SHA-256 of the current refresh token's secret."""
    used_digests: tuple[str, ...] = ()
    """Digests of refresh tokens already exchanged (the latest few): presenting one again
    ends the session."""


class SessionTokens(msgspec.Struct, kw_only=True, frozen=True):
    """What a login or a refresh hands the client."""

    access_token: str
    """The JWT to send as ``Authorization: Bearer``."""
    refresh_token: str
    """The opaque token that gets the next pair (once)."""
    token_type: str = "Bearer"
    """Always ``Bearer``."""
    expires_in: int
    """Seconds the access token is valid."""
    session: Session
    """The session the tokens belong to."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split_refresh(token: str) -> tuple[str, str] | None:
    if not token.startswith(REFRESH_PREFIX) or len(token) > 256:
        return None
    session_id, dot, secret = token[len(REFRESH_PREFIX) :].partition(".")
    if not dot or not session_id.startswith("ses_") or len(secret) < 32:
        return None
    return session_id, secret


class SessionManager:
    """Opens, checks, refreshes, lists and revokes login sessions."""

    def __init__(
        self,
        store: AccountStore,
        keyring: Keyring,
        config: SessionsConfig,
        events: EventBus,
        *,
        keys: KeyringSource | None = None,
        spawn: Callable[[Coroutine[Any, Any, None], str], Any] | None = None,
    ) -> None:
        self.keyring = keyring
        self.keys = keys
        """Where the keyring came from: its file is looked at every few seconds, and a
        rotated keyring is used from then on."""
        self.config = config
        self.events = events
        self.records = Records(
            store,
            "session",
            StoredSession,
            key=lambda stored: stored.session.id,
            owner=lambda stored: stored.session.principal_id,
            expires=lambda stored: stored.session.expires_at,
        )
        self._spawn = spawn
        self._checked: OrderedDict[str, tuple[float, StoredSession]] = OrderedDict()
        self._touching: set[str] = set()
        self._revoked: OrderedDict[str, float] = OrderedDict()
        """Sessions revoked lately (id -> when, monotonic): a store read that was in flight
        when the revocation arrived must not put one back into ``_checked``."""
        self._background: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for revocations from every process and start the cleanup task."""
        subscription = self.events.subscribe(lambda event: isinstance(event, SessionRevoked))
        self._tasks = [
            asyncio.create_task(self._watch(subscription), name="sessions: watch"),
            asyncio.create_task(self._clean(), name="sessions: cleanup"),
        ]
        if self.keys is not None:
            self._tasks.append(asyncio.create_task(self._reload(), name="sessions: keyring"))

    async def health(self) -> Health:
        return Health(detail=f"{len(self._checked)} sessions checked recently")

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, subscription: Any) -> None:
        with subscription:
            async for event in subscription:
                self._forget(event.session_id)

    def _forget(self, session_id: str) -> None:
        """Drop a revoked session from this process's memory, and remember for a while that
        it was revoked."""
        self._checked.pop(session_id, None)
        now = time.monotonic()
        self._revoked[session_id] = now
        self._revoked.move_to_end(session_id)
        horizon = now - max(60.0, 2 * self.config.check_interval)
        while self._revoked and next(iter(self._revoked.values())) < horizon:
            self._revoked.popitem(last=False)

    async def _reload(self) -> None:
        assert self.keys is not None
        while True:
            await asyncio.sleep(KEYRING_POLL)
            try:
                keyring = await asyncio.to_thread(self.keys.reload)
            except Exception as exc:  # whatever the file holds, keep looking
                logger.error("cannot reload the signing keyring: %s", exc)
                continue
            if keyring is not None:
                self.keyring = keyring

    async def _clean(self) -> None:
        while True:
            await asyncio.sleep(self.config.cleanup_interval)
            try:
                await self.purge()
            except Exception as exc:  # the store failed: try again next time
                logger.warning("cannot purge ended sessions: %s", exc)

    async def purge(self, now: float | None = None) -> int:
        """Delete ended sessions (and other expired account records) from the store."""
        moment = time.time() if now is None else now
        total = 0
        while True:
            done = await self.records.store.purge(now=moment, limit=_PURGE_BATCH)
            total += done
            if done < _PURGE_BATCH:
                break
            await asyncio.sleep(0)
        if total:
            logger.info("purged %d expired account records", total)
        return total

    # -- opening and refreshing -------------------------------------------------------------

    async def open(
        self,
        principal: Principal,
        *,
        method: str,
        user_agent: str | None = None,
        ip: str | None = None,
        scopes: frozenset[str] = frozenset(),
    ) -> SessionTokens:
        """Start a session for ``principal`` (who signed in with ``method``) and return its
        first tokens. Beyond ``max_per_user`` sessions, the least recently used ones end."""
        now = time.time()
        config = self.config
        secret = secrets.token_urlsafe(32)
        session = Session(
            principal_id=principal.id,
            auth_method=method,
            created_at=now,
            last_seen_at=now,
            expires_at=min(now + config.idle_timeout, now + config.absolute_timeout),
            user_agent=(user_agent or None) and user_agent[:512],
            ip=ip,
        )
        stored = StoredSession(
            session=session,
            name=principal.name,
            roles=principal.roles,
            scopes=scopes,
            ends_at=now + config.absolute_timeout,
            refresh_digest=_digest(secret),
        )
        await self.records.create(stored)
        await self._make_room(principal.id, keep=session.id)
        logger.info(
            "session %s opened for %s by %s",
            session.id,
            principal.id,
            method,
            extra={"session_id": session.id, "principal": principal.id, "method": method},
        )
        return self._tokens(stored, secret, now)

    async def _make_room(self, owner: str, *, keep: str) -> None:
        """End ``owner``'s least recently used sessions beyond ``max_per_user`` (never
        ``keep``, the one just opened). Run after the new session is stored, so concurrent
        logins converge on the limit whatever their order."""
        items = await self.records.all(owner=owner)
        excess = len(items) - self.config.max_per_user
        if excess <= 0:
            return
        others = [item for item in items if item.value.session.id != keep]
        others.sort(key=lambda item: item.value.session.last_seen_at or 0.0)
        for item in others[:excess]:
            await self._end(item.value, "the user has too many sessions")

    def _tokens(self, stored: StoredSession, secret: str, now: float) -> SessionTokens:
        session = stored.session
        ttl = self.config.access_token_ttl
        access = self.keyring.issue(
            subject=session.principal_id,
            session_id=session.id,
            issuer=self.config.issuer,
            audience=self.config.audience,
            ttl=ttl,
            scopes=stored.scopes,
            now=now,
        )
        return SessionTokens(
            access_token=access,
            refresh_token=f"{REFRESH_PREFIX}{session.id}.{secret}",
            expires_in=int(ttl),
            session=session,
        )

    async def refresh(self, refresh_token: str) -> SessionTokens:
        """Exchange ``refresh_token`` for a new pair; it is then used up. A used-up token
        presented again ends the session (:class:`AuthenticationError` either way)."""
        parts = _split_refresh(refresh_token)
        if parts is None:
            raise self._refused("malformed refresh token")
        session_id, secret = parts
        digest = _digest(secret)
        for _ in range(3):
            item = await self.records.get(session_id)
            if item is None:
                raise self._refused("refresh token of an unknown or ended session", session_id)
            stored = item.value
            now = time.time()
            if not hmac.compare_digest(digest, stored.refresh_digest):
                if any(hmac.compare_digest(digest, used) for used in stored.used_digests):
                    await self._end(stored, "a used refresh token was presented again")
                    logger.warning(
                        "refresh token reuse in session %s of %s: the session is revoked",
                        session_id,
                        stored.session.principal_id,
                        extra={"session_id": session_id},
                    )
                    raise self._refused("refresh token reused", session_id)
                raise self._refused("refresh token does not match", session_id)
            if self._ended(stored, now):
                await self._end(stored, "ended")
                raise self._refused("refresh token of an ended session", session_id)
            fresh = secrets.token_urlsafe(32)
            updated = self._seen(stored, now)
            updated = msgspec.structs.replace(
                updated,
                refresh_digest=_digest(fresh),
                used_digests=(stored.refresh_digest, *stored.used_digests)[:_USED_KEPT],
            )
            try:
                await self.records.replace(updated, item.version)
            except ConflictError:
                continue  # changed meanwhile (a concurrent refresh or touch): look again
            except NotFoundError:
                raise self._refused("session ended during refresh", session_id) from None
            self._checked.pop(session_id, None)  # the stored copy changed
            return self._tokens(updated, fresh, now)
        raise self._refused("session too busy to refresh", session_id)

    def _refused(self, reason: str, session_id: str | None = None) -> AuthenticationError:
        logger.info(
            "refresh refused: %s", reason, extra={"session_id": session_id, "reason": reason}
        )
        return AuthenticationError("the refresh token is not valid")

    # -- checking ---------------------------------------------------------------------------

    @staticmethod
    def is_access_token(bearer: str) -> bool:
        """Whether ``bearer`` looks like an access token (a JWT) rather than an API key."""
        return bearer.count(".") == 2 and bearer.startswith("ey")

    async def authenticate(self, token: str) -> Principal:
        """The principal an access token proves, its session checked (:class:`~hubbub.auth.
        tokens.TokenError` for a bad token, :class:`AuthenticationError` for an ended one)."""
        config = self.config
        claims = self.keyring.verify(
            token, issuer=config.issuer, audience=config.audience, leeway=config.leeway
        )
        stored = await self._check(claims.sid)
        if stored is None:
            raise TokenError("session revoked or ended")
        session = stored.session
        if session.principal_id != claims.sub:
            raise TokenError("subject does not match its session")
        now = time.time()
        last = session.last_seen_at or 0.0
        if now - last >= config.touch_interval and session.id not in self._touching:
            self._touch_later(session.id)
        return Principal(
            id=session.principal_id,
            name=stored.name,
            roles=stored.roles,
            auth_method=session.auth_method,
            scopes=stored.scopes,
            session_id=session.id,
            credential_id=session.id,
            expires_at=float(claims.exp),
        )

    async def _check(self, session_id: str) -> StoredSession | None:
        """The session if it is alive: trusted from this process's memory for
        ``check_interval`` seconds, else read from the store."""
        if session_id in self._revoked:
            return None
        now = time.monotonic()
        cached = self._checked.get(session_id)
        if cached is not None and now - cached[0] < self.config.check_interval:
            self._checked.move_to_end(session_id)
            stored = cached[1]
        else:
            item = await self.records.get(session_id)
            if item is None or session_id in self._revoked:  # revoked while we read
                self._checked.pop(session_id, None)
                return None
            stored = item.value
            self._checked[session_id] = (now, stored)
            self._checked.move_to_end(session_id)
            if len(self._checked) > _CHECKED_KEPT:
                self._checked.popitem(last=False)
        return None if self._ended(stored, time.time()) else stored

    async def alive(self, principal: Principal) -> bool:
        """Whether the session ``principal`` came with is still alive (``True`` for a
        principal without one): what a long-lived stream asks now and then."""
        if principal.session_id is None:
            return True
        return await self._check(principal.session_id) is not None

    @staticmethod
    def _ended(stored: StoredSession, now: float) -> bool:
        expires = stored.session.expires_at
        return expires is not None and expires <= now

    def _seen(self, stored: StoredSession, now: float) -> StoredSession:
        session = msgspec.structs.replace(
            stored.session,
            last_seen_at=now,
            expires_at=min(now + self.config.idle_timeout, stored.ends_at),
        )
        return msgspec.structs.replace(stored, session=session)

    def _touch_later(self, session_id: str) -> None:
        self._touching.add(session_id)
        coro = self._touch(session_id)
        if self._spawn is not None:
            self._spawn(coro, f"sessions: touch {session_id}")
        else:
            task = asyncio.get_running_loop().create_task(coro)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _touch(self, session_id: str) -> None:
        try:
            item = await self.records.get(session_id)
            if item is None:
                return
            now = time.time()
            if now - (item.value.session.last_seen_at or 0.0) < self.config.touch_interval:
                return
            with contextlib.suppress(ConflictError, NotFoundError):
                await self.records.replace(self._seen(item.value, now), item.version)
        except Exception as exc:
            logger.warning("cannot record that session %s was used: %s", session_id, exc)
        finally:
            self._touching.discard(session_id)

    # -- listing and revoking ---------------------------------------------------------------

    async def list(self, owner: str) -> list[Session]:
        """``owner``'s sessions that have not ended, most recently used first."""
        now = time.time()
        items = await self.records.all(owner=owner)
        sessions = [item.value.session for item in items if not self._ended(item.value, now)]
        return sorted(sessions, key=lambda s: s.last_seen_at or s.created_at, reverse=True)

    async def revoke(self, session_id: str, *, owner: str | None = None) -> bool:
        """End session ``session_id`` (only if it is ``owner``'s, when given) everywhere;
        whether there was such a session."""
        item: Item[StoredSession] | None = await self.records.get(session_id)
        if item is None or (owner is not None and item.value.session.principal_id != owner):
            return False
        await self._end(item.value, "revoked")
        return True

    async def revoke_all(self, owner: str, *, keep: str | None = None) -> int:
        """End all of ``owner``'s sessions but ``keep``; how many ended."""
        ended = 0
        for item in await self.records.all(owner=owner):
            if item.value.session.id != keep:
                await self._end(item.value, "revoked with all the user's sessions")
                ended += 1
        return ended

    async def _end(self, stored: StoredSession, why: str) -> None:
        session = stored.session
        await self.records.delete(session.id)
        self._forget(session.id)
        self.events.publish(
            SessionRevoked(session_id=session.id, principal_id=session.principal_id),
            owner=session.principal_id,
        )
        logger.info(
            "session %s of %s ended: %s",
            session.id,
            session.principal_id,
            why,
            extra={"session_id": session.id, "principal": session.principal_id},
        )
