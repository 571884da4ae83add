"""How an OpenID Connect login fails: refused (401, one generic message, the reason in the log)
or not possible now because the provider cannot be reached (503, naming the provider)."""

from __future__ import annotations

from hubbub.errors import AuthenticationError, HubbubError

__all__ = ["IdentityProviderUnavailableError", "LoginRefusedError"]

GENERIC_MESSAGE = "sign-in with the identity provider failed; please try again"
"""What the client is told about every refused login (the reason goes to the log only)."""


class LoginRefusedError(AuthenticationError):
    """A login was refused: the provider said no, or its answer failed a check (signature,
    issuer, audience, expiry, nonce...). ``reason`` says which, for the log; the message is the
    same for every reason. Neither ever holds a token or an authorization code."""

    def __init__(self, reason: str, *, provider: str = "") -> None:
        self.reason = reason
        """Why, for the log."""
        self.provider = provider
        """The provider's name (empty before one was chosen)."""
        super().__init__(GENERIC_MESSAGE)


class IdentityProviderUnavailableError(HubbubError):
    """The identity provider could not be asked (unreachable, too slow, answering errors or a
    broken discovery document): the login cannot happen now. The message names the provider
    and says what failed, without a trace."""

    status = 503
    code = "identity_provider_unavailable"

    def __init__(self, provider: str, problem: str) -> None:
        self.provider = provider
        """The provider's name."""
        self.problem = problem
        """What failed, in a few words."""
        super().__init__(f"identity provider {provider!r} is unavailable: {problem}")
