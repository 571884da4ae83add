"""API keys, kept in the account store so that every process (and host) sharing it agrees.

A key reads ``hbk_<id>_<secret>``: ``id`` is 16 hex digits, ``secret`` 43 URL-safe characters
(256 random bits). Only a SHA-256 digest of the secret is stored, as the record's lookup (a
slow password hash would add cost and no safety to a secret that long); the key itself is shown
once, when it is created. A key has an owner (the principal it authenticates as), a name, roles,
scopes and the models it may use (:mod:`hubbub.auth.scopes`), an optional expiry, and the time
it was last used (written at most once a minute per key, in the background).

**Checking a key** (:meth:`ApiKeys.verify`): a bearer that is not an ``hbk_`` key is not this
service's (``None``); an unknown, revoked or expired one is refused with one generic
:class:`~hubbub.errors.AuthenticationError` (the reason is logged). Like sessions
(:class:`~hubbub.auth.sessions.SessionManager`), a process trusts a key it has checked for
``[sessions] check_interval`` (1 s), remembering it by the **whole** bearer string (never a part
of it: a key with a forged secret is never taken for a remembered one), in a bounded cache.

**Revoking** (:meth:`ApiKeys.revoke`) marks the key revoked in the store (it stays listed) and
publishes :class:`~hubbub.events.SessionRevoked` naming it: every process drops it from its
cache at once, and the event streams it opened end. A process that misses the event (no shared
event log) refuses the key within ``check_interval`` anyway.

**Request limits**: with ``[auth] requests_per_minute_per_key``, each verification (one per
request) is counted (:mod:`hubbub.auth.keylimits`); past the limit, 429 with ``Retry-After``.

**Failing closed**: creating a key first records in the data directory that credentials exist
(:class:`~hubbub.auth.provisioning.ProvisioningMarker`); from then on an account store holding
no key and no user is lost credentials (:meth:`ApiKeys.ensure_not_lost`), never local mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Any

import msgspec

from hubbub.auth.keylimits import KeyRateLimiter
from hubbub.auth.provisioning import ProvisioningMarker
from hubbub.auth.records import Records
from hubbub.auth.roles import ADMIN, USER
from hubbub.auth.scopes import (
    allowed_tools,
    check_models,
    check_scopes,
    check_tools,
    model_scopes,
    narrow,
    narrow_tools,
    split_scopes,
    tool_scopes,
)
from hubbub.auth.users import check_user_name
from hubbub.contracts import AccountStore
from hubbub.errors import (
    AuthenticationError,
    ComponentError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from hubbub.events import EventBus, SessionRevoked
from hubbub.models import Health, Principal

__all__ = [
    "KEY_PREFIX",
    "KIND",
    "METHOD",
    "ApiKeyInfo",
    "ApiKeys",
    "StoredKey",
    "check_label",
    "digest",
    "parse_key",
]

logger = logging.getLogger("hubbub.auth")

KIND = "api_key"
"""The account store's kind for API keys."""
METHOD = "api_key"
"""The auth method's name (what a key's principal has as ``auth_method``)."""
KEY_PREFIX = "hbk_"
"""How an API key starts."""

_KEY = re.compile(r"hbk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_\-]{32,64})")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

USER_KIND = "user"
"""The account store's kind for local accounts (:class:`hubbub.auth.users.Users`)."""

CHECKED_KEPT = 10_000
"""Keys a process remembers as checked (the most recently used)."""
TOUCH_INTERVAL = 60.0
"""Seconds between two writes of a key's ``last_used_at``."""
MAX_ACTIVE_PER_OWNER = 100
"""Active keys one owner may hold at once."""
LATEST_EXPIRY = 253_402_300_800.0
"""The year 10000: no key expires later (the stores' limit on times)."""
_HEALTH_TTL = 10.0
_HEALTH_READ = 1_000


class StoredKey(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """An API key as the account store keeps it (with the digest of its secret)."""

    id: str
    """16 hex digits; the ``<id>`` of ``hbk_<id>_<secret>``."""
    owner: str
    """The principal the key authenticates as."""
    digest: str
    """SHA-256 of the secret, hex (the record's lookup)."""
    name: str = ""
    """A label to recognise it by."""
    roles: frozenset[str] = frozenset()
    """The roles its principal has."""
    scopes: frozenset[str] = frozenset()
    """What it may do (empty: whatever its roles allow)."""
    models: frozenset[str] = frozenset()
    """The models it may use (empty: any)."""
    tools: frozenset[str] = frozenset()
    """The tools it may use, by name or pattern (empty: any its owner may)."""
    created_at: float
    """When it was created (Unix seconds)."""
    expires_at: float | None = None
    """When it stops working (Unix seconds); ``None``: never on its own."""
    last_used_at: float | None = None
    """When a request last used it, to the minute; ``None``: never."""
    revoked_at: float | None = None
    """When it was revoked; ``None``: it was not."""

    def info(self) -> ApiKeyInfo:
        """What may be shown of it (never the digest)."""
        return ApiKeyInfo(
            id=self.id,
            owner=self.owner,
            name=self.name,
            roles=sorted(self.roles),
            scopes=sorted(self.scopes),
            models=sorted(self.models),
            tools=sorted(self.tools),
            created_at=self.created_at,
            expires_at=self.expires_at,
            last_used_at=self.last_used_at,
            revoked_at=self.revoked_at,
        )

    def ended(self, now: float) -> bool:
        """Whether it no longer works at ``now`` (revoked or expired)."""
        return self.revoked_at is not None or (
            self.expires_at is not None and self.expires_at <= now
        )


class ApiKeyInfo(msgspec.Struct, kw_only=True):
    """An API key as listed to its owner and administrators: never its secret or digest."""

    id: str
    """The key's id (the ``<id>`` of ``hbk_<id>_<secret>``): what revoking takes."""
    owner: str
    """The principal it authenticates as."""
    name: str = ""
    """Its label."""
    roles: list[str] = msgspec.field(default_factory=list)
    """Its roles, sorted."""
    scopes: list[str] = msgspec.field(default_factory=list)
    """Its scopes, sorted (empty: whatever its roles allow)."""
    models: list[str] = msgspec.field(default_factory=list)
    """The models it may use, sorted (empty: any)."""
    tools: list[str] = msgspec.field(default_factory=list)
    """The tools it may use, names or patterns, sorted (empty: any its owner may)."""
    created_at: float
    """When it was created (Unix seconds)."""
    expires_at: float | None = None
    """When it stops working (Unix seconds); ``None``: never on its own."""
    last_used_at: float | None = None
    """When a request last used it (to the minute); ``None``: never."""
    revoked_at: float | None = None
    """When it was revoked; ``None``: it is active (unless expired)."""


def digest(secret: str) -> str:
    """The SHA-256 digest (hex) under which a key's secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(bearer: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed API key; ``None`` for anything else."""
    match = _KEY.fullmatch(bearer)
    return None if match is None else (match.group("id"), match.group("secret"))


def check_label(name: str) -> str:
    """Return a key's label if it is acceptable (at most 100 characters, no control
    characters), else raise :class:`InvalidRequestError`."""
    if len(name) > 100 or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidRequestError(
            "a key's label must be at most 100 characters, without control characters",
            field="name",
        )
    return name


def _check_roles(roles: Iterable[str]) -> frozenset[str]:
    checked = frozenset(roles)
    for role in sorted(checked):
        if not isinstance(role, str) or not _ROLE.fullmatch(role):
            raise InvalidRequestError(f"role {role!r} is not a valid role name", field="roles")
    return checked


def _check_expiry(expires_at: float | None, now: float) -> float | None:
    if expires_at is None:
        return None
    if not expires_at > now:
        raise InvalidRequestError("expires_at must be in the future", field="expires_at")
    if expires_at >= LATEST_EXPIRY:
        raise InvalidRequestError("expires_at must be before the year 10000", field="expires_at")
    return float(expires_at)


class _Checked:
    """A key this process checked: when, what the store said, and the principal it proves."""

    __slots__ = ("at", "principal", "stored", "touched_at")

    def __init__(self, at: float, stored: StoredKey, principal: Principal) -> None:
        self.at = at
        self.stored = stored
        self.principal = principal
        self.touched_at: float | None = None  # when this process last wrote last_used_at


class ApiKeys:
    """Creates, checks, lists and revokes API keys in the account store.

    :param store: the account store.
    :param events: where revocations are announced and heard (from every process when the
        event log is shared).
    :param check_interval: seconds a checked key is trusted before the store is read again.
    :param limiter: counts each key's requests (``None``: no limit).
    :param marker: the data directory's record that credentials exist (``None``: none kept).
    :param spawn: runs background work (``last_used_at`` writes) under the runtime's
        supervision; ``None``: plain tasks.
    :param touch_interval: seconds between two writes of a key's ``last_used_at``.
    """

    def __init__(
        self,
        store: AccountStore,
        events: EventBus,
        *,
        check_interval: float = 1.0,
        limiter: KeyRateLimiter | None = None,
        marker: ProvisioningMarker | None = None,
        spawn: Callable[[Coroutine[Any, Any, None], str], Any] | None = None,
        touch_interval: float = TOUCH_INTERVAL,
    ) -> None:
        self.store = store
        self.records = Records(
            store,
            KIND,
            StoredKey,
            key=lambda key: key.id,
            owner=lambda key: key.owner,
            lookup=lambda key: key.digest,
        )
        self.events = events
        self.check_interval = check_interval
        """Seconds a checked key is trusted before the store is read again."""
        self.limiter = limiter
        self.marker = marker
        self.touch_interval = touch_interval
        self._spawn = spawn
        self._checked: OrderedDict[str, _Checked] = OrderedDict()  # by the whole bearer
        self._bearer_of: dict[str, str] = {}  # key id -> the bearer remembered for it
        self._touching: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._active: tuple[float, str] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for revocations from every process."""
        subscription = self.events.subscribe(lambda event: isinstance(event, SessionRevoked))
        self._tasks = [asyncio.create_task(self._watch(subscription), name="api keys: watch")]

    async def health(self) -> Health:
        return Health(detail=f"{len(self._checked)} keys checked recently")

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _watch(self, subscription: Any) -> None:
        with subscription:
            async for event in subscription:
                self.forget(event.session_id)

    def forget(self, key_id: str) -> None:
        """Drop what this process remembers of key ``key_id`` (it is read again next time)."""
        bearer = self._bearer_of.pop(key_id, None)
        if bearer is not None:
            self._checked.pop(bearer, None)

    # -- checking ---------------------------------------------------------------------------

    async def alive(self, key_id: str) -> bool:
        """Whether key ``key_id`` still holds (not revoked, not expired): what a long-lived
        stream opened with it asks now and then. Trusted from this process's memory for
        ``check_interval`` seconds, else read from the store."""
        bearer = self._bearer_of.get(key_id)
        checked = self._checked.get(bearer) if bearer is not None else None
        if checked is not None and time.monotonic() - checked.at < self.check_interval:
            stored: StoredKey | None = checked.stored
        else:
            item = await self.records.get(key_id)
            stored = item.value if item is not None else None
        return stored is not None and not stored.ended(time.time())

    async def verify(self, bearer: str) -> Principal | None:
        """The principal the API key ``bearer`` proves; ``None`` when ``bearer`` is not an API
        key at all (another method's credential). Raises :class:`AuthenticationError` for an
        unknown, revoked or expired key (one message; the reason is logged),
        :class:`~hubbub.auth.provisioning.CredentialsLostError` when the store lost every
        credential, and :class:`~hubbub.errors.TooManyRequestsError` when the key is past
        ``[auth] requests_per_minute_per_key``."""
        parts = parse_key(bearer)
        if parts is None:
            return None
        key_id, secret = parts
        moment = time.monotonic()
        checked = self._checked.get(bearer)
        if checked is not None and moment - checked.at < self.check_interval:
            self._checked.move_to_end(bearer)
        else:
            checked = await self._read(bearer, key_id, secret, moment, checked)
        stored = checked.stored
        now = time.time()
        if stored.revoked_at is not None:
            self.forget(key_id)
            raise self._refused("revoked", key_id)
        if stored.expires_at is not None and stored.expires_at <= now:
            raise self._refused("expired", key_id)
        self._touch_if_due(checked, now, moment)
        if self.limiter is not None:
            await self.limiter.hit(key_id)
        return checked.principal

    async def _read(
        self, bearer: str, key_id: str, secret: str, moment: float, old: _Checked | None
    ) -> _Checked:
        item = await self.records.find(digest(secret))
        if item is None or item.value.id != key_id:
            self.forget(key_id)
            await self.ensure_not_lost()
            raise self._refused("unknown key" if item is None else "id does not match", key_id)
        stored = item.value
        checked = _Checked(moment, stored, self._principal(stored))
        if old is not None:
            checked.touched_at = old.touched_at
        previous = self._bearer_of.get(key_id)
        if previous is not None and previous != bearer:
            self._checked.pop(previous, None)
        self._checked[bearer] = checked
        self._bearer_of[key_id] = bearer
        self._checked.move_to_end(bearer)
        while len(self._checked) > CHECKED_KEPT:
            _, evicted = self._checked.popitem(last=False)
            self._bearer_of.pop(evicted.stored.id, None)
        return checked

    @staticmethod
    def _principal(stored: StoredKey) -> Principal:
        return Principal(
            id=stored.owner,
            name=stored.owner,
            roles=stored.roles,
            auth_method=METHOD,
            scopes=stored.scopes | model_scopes(stored.models) | tool_scopes(stored.tools),
            credential_id=stored.id,
            expires_at=stored.expires_at,
        )

    @staticmethod
    def _refused(reason: str, key_id: str) -> AuthenticationError:
        logger.info(
            "API key %s refused: %s",
            key_id,
            reason,
            extra={"key_id": key_id, "reason": reason},
        )
        return AuthenticationError("the API key is not valid")

    def _touch_if_due(self, checked: _Checked, now: float, moment: float) -> None:
        stored = checked.stored
        interval = self.touch_interval
        if stored.last_used_at is not None and now - stored.last_used_at < interval:
            return
        if checked.touched_at is not None and moment - checked.touched_at < interval:
            return
        if stored.id in self._touching:
            return
        checked.touched_at = moment
        self._touching.add(stored.id)
        coro = self._touch(stored.id)
        if self._spawn is not None:
            self._spawn(coro, f"api keys: touch {stored.id}")
        else:
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _touch(self, key_id: str) -> None:
        try:
            item = await self.records.get(key_id)
            if item is None or item.value.revoked_at is not None:
                return
            now = time.time()
            last = item.value.last_used_at
            if last is not None and now - last < self.touch_interval:
                return
            used = msgspec.structs.replace(item.value, last_used_at=now)
            with contextlib.suppress(ConflictError, NotFoundError):
                await self.records.replace(used, item.version)
        except Exception as exc:
            logger.warning("cannot record that API key %s was used: %s", key_id, exc)
        finally:
            self._touching.discard(key_id)

    # -- creating ---------------------------------------------------------------------------

    async def create(
        self,
        owner: str,
        *,
        name: str = "",
        roles: Iterable[str] = (USER,),
        scopes: Iterable[str] = (),
        models: Iterable[str] = (),
        tools: Iterable[str] = (),
        expires_at: float | None = None,
        known_models: Collection[str] | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key for ``owner`` (a valid user name, see :func:`hubbub.auth.
        check_user_name`); return its description and the key itself (shown once).

        ``models`` are checked against ``known_models`` when given (a typo would make a key
        that can use nothing). The data directory records that keys exist before the key is
        stored: if that cannot be written, no key is created (:class:`ComponentError`). An
        owner holds at most :data:`MAX_ACTIVE_PER_OWNER` active keys (:class:`ConflictError`
        beyond)."""
        check_user_name(owner)
        check_label(name)
        now = time.time()
        stored = StoredKey(
            id=secrets.token_hex(8),
            owner=owner,
            digest="",
            name=name,
            roles=_check_roles(roles),
            scopes=check_scopes(scopes),
            models=self._check_models(models, known_models),
            tools=check_tools(tools),
            created_at=now,
            expires_at=_check_expiry(expires_at, now),
        )
        active = [key for key in await self._all(owner) if not key.ended(now)]
        if len(active) >= MAX_ACTIVE_PER_OWNER:
            raise ConflictError(
                f"{owner} has {len(active)} active API keys already, the most allowed: "
                "revoke one first"
            )
        secret = secrets.token_urlsafe(32)
        stored = msgspec.structs.replace(stored, digest=digest(secret))
        marker = self.marker
        first = marker is not None and not marker.exists()
        if marker is not None:
            try:
                marker.record(METHOD, "account store")
            except OSError as exc:
                raise ComponentError(
                    f"cannot record in {marker.path} that API keys exist: {exc.strerror or exc}"
                ) from None
        try:
            await self.records.create(stored)
        except BaseException:
            if first and marker is not None:  # nothing was created after all
                marker.path.unlink(missing_ok=True)
            raise
        self._active = None
        logger.info(
            "API key %s created for %s",
            stored.id,
            owner,
            extra={"key_id": stored.id, "principal": owner},
        )
        return stored.info(), f"{KEY_PREFIX}{stored.id}_{secret}"

    @staticmethod
    def _check_models(models: Iterable[str], known: Collection[str] | None) -> frozenset[str]:
        checked = check_models(models)
        if known is not None:
            unknown = sorted(checked - set(known))
            if unknown:
                raise InvalidRequestError(
                    f"no provider serves the model {unknown[0]!r}"
                    f" (available: {', '.join(sorted(known)) or 'none'})",
                    field="models",
                )
        return checked

    async def grant(
        self,
        caller: Principal,
        *,
        name: str = "",
        roles: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        tools: Iterable[str] | None = None,
        expires_at: float | None = None,
        known_models: Collection[str] | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key for ``caller`` itself (``POST /api/keys``), never with more than the
        caller holds: requested ``roles`` within the caller's (default: the caller's but
        ``admin``, which must be asked for; ``user`` always), ``scopes``, ``models`` and
        ``tools`` within the caller's when those are restricted (a key made with a restricted
        key inherits its restrictions when it asks for none), and a key made with an expiring
        key expires no later than it. Asking for more is a :class:`PermissionDeniedError` (403)."""
        held_roles = caller.roles | {USER}
        wanted = _check_roles(roles) if roles is not None else held_roles - {ADMIN}
        beyond = wanted - held_roles
        if beyond:
            raise PermissionDeniedError(
                f"you cannot grant roles you do not hold: {', '.join(sorted(beyond))}"
            )
        held_scopes, held_models = split_scopes(caller.scopes)
        granted_scopes = narrow(
            held_scopes, check_scopes(scopes) if scopes is not None else None, "scopes"
        )
        granted_models = narrow(
            held_models, check_models(models) if models is not None else None, "models"
        )
        granted_tools = narrow_tools(
            allowed_tools(caller), check_tools(tools) if tools is not None else None
        )
        if caller.auth_method == METHOD and caller.expires_at is not None:
            if expires_at is None:
                expires_at = caller.expires_at
            elif expires_at > caller.expires_at:
                raise PermissionDeniedError(
                    "a key made with an expiring key cannot outlive it: expires_at must be at "
                    "or before the expiry of the key you use"
                )
        return await self.create(
            caller.id,
            name=name,
            roles=wanted | {USER},
            scopes=granted_scopes,
            models=granted_models,
            tools=granted_tools,
            expires_at=expires_at,
            known_models=known_models,
        )

    async def adopt(self, stored: StoredKey) -> bool:
        """Store a key made elsewhere (imported from the old key database) as it is; whether
        it was new (an id or digest stored already is left alone, so importing twice is
        harmless)."""
        try:
            await self.records.create(stored)
        except ConflictError:
            return False
        self._active = None
        return True

    # -- listing and revoking ---------------------------------------------------------------

    async def _all(self, owner: str | None = None) -> list[StoredKey]:
        return [item.value for item in await self.records.all(owner=owner)]

    async def list(self, owner: str | None = None) -> list[ApiKeyInfo]:
        """Keys (revoked and expired ones included), newest first; only ``owner``'s when
        given."""
        keys = sorted(await self._all(owner), key=lambda key: key.created_at, reverse=True)
        return [key.info() for key in keys]

    async def get(self, key_id: str, owner: str | None = None) -> ApiKeyInfo:
        """Key ``key_id`` (only if it is ``owner``'s, when given); :class:`NotFoundError`
        otherwise."""
        item = await self.records.get(key_id)
        if item is None or (owner is not None and item.value.owner != owner):
            raise NotFoundError(f"there is no API key {key_id!r}")
        return item.value.info()

    async def revoke(self, key_id: str, owner: str | None = None) -> bool:
        """Revoke key ``key_id`` (only if it is ``owner``'s, when given) everywhere; whether
        there was such a key, not revoked yet. It stays listed, with ``revoked_at``."""
        for _ in range(5):
            item = await self.records.get(key_id)
            if item is None or item.value.revoked_at is not None:
                return False
            stored = item.value
            if owner is not None and stored.owner != owner:
                return False
            revoked = msgspec.structs.replace(stored, revoked_at=time.time())
            try:
                await self.records.replace(revoked, item.version)
            except ConflictError:
                continue  # used meanwhile (last_used_at): read it again
            except NotFoundError:
                return False
            self.forget(key_id)
            self._active = None
            self.events.publish(
                SessionRevoked(session_id=key_id, principal_id=stored.owner), owner=stored.owner
            )
            logger.info(
                "API key %s of %s revoked: refused everywhere, its streams end",
                key_id,
                stored.owner,
                extra={"key_id": key_id, "principal": stored.owner},
            )
            return True
        raise ConflictError(f"API key {key_id!r} kept changing while being revoked: try again")

    # -- provisioning -----------------------------------------------------------------------

    async def exists(self) -> bool:
        """Whether any key was ever made (revoked and expired ones count: revoking the last
        key must not re-open local mode)."""
        return bool(await self.store.list_records(KIND, limit=1))

    async def ensure_not_lost(self) -> None:
        """Raise :class:`~hubbub.auth.provisioning.CredentialsLostError` when the data
        directory records that keys or accounts were set up but the account store holds no key
        and no user: it was replaced, emptied or flushed, and must be restored rather than
        taken for a fresh start."""
        marker = self.marker
        if marker is None or await self.exists():
            return
        if not (marker.records(METHOD) or marker.records("local")):
            return
        if await self.store.list_records(USER_KIND, limit=1):
            return
        raise marker.lost("the account store holds no API key and no user")

    async def describe(self) -> str:
        """``N active keys`` (counted among the first thousand, at most every few seconds):
        for the auth method's health."""
        cached = self._active
        moment = time.monotonic()
        if cached is not None and moment - cached[0] < _HEALTH_TTL:
            return cached[1]
        records = await self.store.list_records(KIND, limit=_HEALTH_READ)
        now = time.time()
        decoder = msgspec.json.Decoder(StoredKey)
        active = 0
        for record in records:
            with contextlib.suppress(msgspec.DecodeError):
                active += not decoder.decode(record.data).ended(now)
        more = "+" if len(records) >= _HEALTH_READ else ""
        detail = f"{active}{more} active keys"
        self._active = (moment, detail)
        return detail
