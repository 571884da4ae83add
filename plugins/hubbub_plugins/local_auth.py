"""The ``local`` auth method: accounts with passwords kept in the account store.

``hubbub users add NAME [--admin] [--password-stdin]`` creates one; ``POST /api/auth/login``
with ``{"username", "password"}`` checks the password (argon2id, see ``[passwords]``) and opens
a session, whose access token is then the bearer credential. This method never accepts a
bearer token itself: only the user name and password of a login."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubbub import hookimpl
from hubbub.contracts import Credentials
from hubbub.errors import AuthenticationError
from hubbub.models import Health, Principal

if TYPE_CHECKING:
    from hubbub.auth.users import Users
    from hubbub.registry import ComponentContext, Registrar


class PasswordRefused(AuthenticationError):
    """The user name or password was not accepted; ``reason`` says why, for the log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__("the user name or password is not right")


class LocalAuth:
    """Checks user names and passwords against the local accounts."""

    def __init__(self, users: Users) -> None:
        self.users = users

    async def start(self) -> None:
        """Nothing to start: the accounts are the runtime's."""

    async def health(self) -> Health:
        return Health(detail="passwords of local accounts")

    async def aclose(self) -> None:
        """Nothing to release."""

    async def is_provisioned(self) -> bool:
        """Whether any local account exists."""
        return await self.users.exists()

    async def authenticate(self, credentials: Credentials) -> Principal | None:
        """The account whose name and password these are; ``None`` without a user name."""
        if credentials.username is None or credentials.password is None:
            return None
        login = await self.users.check_password(credentials.username, credentials.password)
        user = login.user
        if user is None:
            raise PasswordRefused(login.reason)
        return Principal(id=user.id, name=user.id, roles=user.roles, auth_method="local")


@hookimpl
def register_auth_methods(register: Registrar) -> None:
    def build(context: ComponentContext[None]) -> LocalAuth:
        return LocalAuth(context.users)

    register("local", build, description="user names and passwords (hubbub users add)")
