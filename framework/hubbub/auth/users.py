"""Users: names (what ``hubbub users add NAME`` and ``keys create --user NAME`` accept), and
the :class:`Users` repository of local accounts in the account store.

A user's id is the name it was created with (``alice`` owns what ``alice`` creates); names are
unique regardless of case (``Alice`` and ``alice`` are one account), and ``local``, the local-mode
user, cannot be taken. Passwords are kept as argon2id hashes (:mod:`hubbub.auth.passwords`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable

import msgspec

from hubbub.auth.passwords import Passwords
from hubbub.auth.records import Item, Records
from hubbub.contracts import AccountStore
from hubbub.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
)
from hubbub.models import Health, Principal

__all__ = [
    "RESERVED_NAMES",
    "USER_NAME_RULE",
    "PasswordLogin",
    "User",
    "Users",
    "check_user_name",
    "is_user_name",
]

logger = logging.getLogger("hubbub.auth")

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
USER_NAME_RULE = "1 to 64 letters, digits or . _ @ + -, starting with a letter or digit"
"""The rule, as error messages state it."""

RESERVED_NAMES = frozenset({"local"})
"""Names no account may take: ``local`` is who callers are in local mode."""


def is_user_name(name: str) -> bool:
    """Whether ``name`` follows :data:`USER_NAME_RULE`."""
    return _USER_NAME.fullmatch(name) is not None


def check_user_name(name: str, *, field: str = "user") -> str:
    """Return ``name`` if it is a valid user name (the principal id of the local user,
    ``local``, is one), else raise :class:`InvalidRequestError` naming ``field``."""
    if _USER_NAME.fullmatch(name):
        return name
    if not name.strip():
        reason = "must not be empty"
    elif name != name.strip():
        reason = "must not start or end with spaces"
    else:
        reason = f"is not valid: use {USER_NAME_RULE}"
    raise InvalidRequestError(f"user name {name!r} {reason}", field=field)


class User(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A local account."""

    id: str
    """The principal id: the name the account was created with."""
    roles: frozenset[str] = frozenset({"user"})
    """``user``, plus ``admin`` for administrators."""
    password_hash: str | None = None
    """The argon2id hash of the password; ``None``: no password login."""
    disabled: bool = False
    """A disabled account cannot log in, and its sessions end."""
    email: str | None = None
    """An e-mail address, if known."""
    created_at: float = msgspec.field(default_factory=time.time)
    """When the account was created (Unix seconds)."""
    password_changed_at: float | None = None
    """When the password was last set (Unix seconds)."""
    source: str = "local"
    """The sign-in method that created it: ``local``, or the identity provider's method
    (``oidc``...) for someone who signed in through one."""


class PasswordLogin(msgspec.Struct, kw_only=True, frozen=True):
    """What :meth:`Users.check_password` found."""

    user: User | None
    """The account, when the password was right and the account may log in."""
    reason: str = ""
    """Why not (``unknown user``, ``wrong password``, ``account disabled``...), for the log."""


def _refused(reason: str) -> AuthenticationError:
    error = AuthenticationError("the sign-in could not be completed")
    error.reason = reason  # type: ignore[attr-defined]
    return error


def _fold(name: str) -> str:
    # Names are ASCII (USER_NAME_RULE): lower() folds them, and nothing else folds onto them
    # (casefold would map the Kelvin sign or "ß" onto ASCII names).
    return name.lower()


class Users:
    """The local accounts in an account store."""

    def __init__(
        self,
        store: AccountStore,
        passwords: Passwords,
        screen: Callable[[str, str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.passwords = passwords
        self.screen = screen
        """Judges a new password after the length policy (the ``check_new_password`` hook):
        a reason to refuse it, or ``None``."""
        self.records = Records(
            store, "user", User, key=lambda user: user.id, lookup=lambda user: _fold(user.id)
        )

    async def start(self) -> None:
        """Nothing to acquire (the stand-in hash is made at the first login, whoever logs
        in: not even the first login says whether its user exists)."""

    async def health(self) -> Health:
        return Health(detail="local accounts")

    async def aclose(self) -> None:
        """Nothing to release: the account store is a component of its own."""

    async def add(
        self, name: str, password: str | None, *, admin: bool = False, email: str | None = None
    ) -> User:
        """Create the account ``name`` (:class:`ConflictError` when it exists, in any case)."""
        check_user_name(name, field="name")
        if _fold(name) in RESERVED_NAMES:
            raise InvalidRequestError(f"the user name {name!r} is reserved", field="name")
        hashed = None
        if password is not None:
            await self._check_new(password, name)
            hashed = await self.passwords.hash(password)
        user = User(
            id=name,
            roles=frozenset({"user", "admin"} if admin else {"user"}),
            password_hash=hashed,
            email=email,
            password_changed_at=time.time() if hashed else None,
        )
        try:
            await self.records.create(user)
        except ConflictError:
            raise ConflictError(f"a user named {name!r} exists already") from None
        logger.info("user %s created%s", name, " (admin)" if admin else "")
        return user

    async def get(self, name: str) -> Item[User] | None:
        """The account ``name`` (in any case), or ``None`` (for a string that is no user
        name too)."""
        if not is_user_name(name):
            return None
        return await self.records.find(_fold(name))

    async def require(self, name: str) -> Item[User]:
        """The account ``name``, or :class:`NotFoundError`."""
        item = await self.get(name)
        if item is None:
            raise NotFoundError(f"there is no user named {name!r}")
        return item

    async def set_password(self, name: str, password: str) -> User:
        """Give ``name`` a new password (checked against the policy)."""
        item = await self.require(name)
        await self._check_new(password, item.value.id)
        hashed = await self.passwords.hash(password)
        user = msgspec.structs.replace(
            item.value, password_hash=hashed, password_changed_at=time.time()
        )
        await self.records.replace(user, item.version)
        return user

    async def _check_new(self, password: str, name: str) -> None:
        self.passwords.check_policy(password)
        if self.screen is not None:
            reason = await self.screen(password, name)
            if reason:
                raise InvalidRequestError(
                    f"this password cannot be used: {reason}", field="password"
                )

    async def admit(self, principal: Principal, method: str) -> bool:
        """Keep the account of someone an identity provider signed in (``principal``, from
        ``method``): created at their first sign-in, its roles kept as the provider gives them,
        so that administrators see, disable and manage them like local accounts. Returns
        whether the roles changed (the caller ends the account's other sessions then). Raises
        :class:`~hubbub.errors.AuthenticationError` for a disabled account, or one that
        another method made (a local account's id is never signed into from outside)."""
        for _ in range(3):
            item = await self.records.get(principal.id)
            if item is None:
                try:
                    await self.records.create(
                        User(id=principal.id, roles=principal.roles, source=method)
                    )
                except ConflictError:
                    continue  # created meanwhile, or a local account named alike: look again
                return False
            user = item.value
            if user.source != method:
                raise _refused(f"the account {principal.id!r} belongs to {user.source!r}")
            if user.disabled:
                raise _refused("account disabled")
            if user.roles == principal.roles:
                return False
            try:
                await self.records.replace(
                    msgspec.structs.replace(user, roles=principal.roles), item.version
                )
            except (ConflictError, NotFoundError):
                continue
            return True
        raise _refused(f"the account {principal.id!r} clashes with another")

    async def set_roles(self, name: str, roles: frozenset[str]) -> User:
        """Give the account ``name`` these roles."""
        item = await self.require(name)
        user = msgspec.structs.replace(item.value, roles=roles)
        await self.records.replace(user, item.version)
        return user

    async def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable (or enable again) the account ``name``."""
        item = await self.require(name)
        user = msgspec.structs.replace(item.value, disabled=disabled)
        await self.records.replace(user, item.version)
        return user

    async def list(self) -> list[User]:
        """Every account, by id."""
        return [item.value for item in await self.records.all()]

    async def exists(self) -> bool:
        """Whether there is any account."""
        return bool(await self.records.store.list_records("user", limit=1))

    async def check_password(self, name: str, password: str) -> PasswordLogin:
        """Whether ``password`` is ``name``'s: the same argon2 work whether or not the account
        exists; a hash made with older parameters is replaced by a new one."""
        await self.passwords.prepare()
        item = await self.get(name)
        stored = item.value.password_hash if item is not None else None
        check = await self.passwords.verify(stored, password)
        if item is None:
            return PasswordLogin(user=None, reason="unknown user")
        if stored is None:
            return PasswordLogin(user=None, reason="account has no password")
        if not check.ok:
            return PasswordLogin(user=None, reason="wrong password")
        user = item.value
        if user.disabled:
            return PasswordLogin(user=None, reason="account disabled")
        if check.rehash is not None:
            user = msgspec.structs.replace(user, password_hash=check.rehash)
            # changed meanwhile: the next login rehashes
            with contextlib.suppress(ConflictError, NotFoundError):
                await self.records.replace(user, item.version)
        return PasswordLogin(user=user)
