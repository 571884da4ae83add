"""Checking an ID token against a provider's keys (PyJWT), with nothing taken from the token
on trust: the algorithm must be one the provider advertises and asymmetric (never ``none``,
never HS*, so a public key can never serve as an HMAC secret), the key is chosen by ``kid``
among the provider's published keys of that algorithm's type, and ``iss``, ``aud``, ``exp``,
``iat`` (with a small leeway), ``sub``, ``nonce`` and ``azp`` are checked.

Every refusal is a :class:`~hubbub_plugins.oidc_auth.errors.LoginRefusedError` with a short
reason. :class:`NoKeyVerifiedError` is the one failure the caller may cure by reading the
provider's keys again (the provider rotated them).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt

from hubbub_plugins.oidc_auth.errors import LoginRefusedError

__all__ = [
    "ASYMMETRIC",
    "KeySet",
    "NoKeyVerifiedError",
    "allowed_algorithms",
    "check_claims",
    "read_header",
    "unverified_claims",
    "verify_signature_and_times",
]

_FAMILY = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}
ASYMMETRIC = frozenset(_FAMILY)
"""The signature algorithms an ID token may use: public-key ones only."""

REQUIRED = ["iss", "sub", "aud", "exp", "iat"]
"""Claims every ID token must carry (OpenID Connect Core 2)."""


class NoKeyVerifiedError(Exception):
    """None of the provider's known keys fits the token (unknown ``kid``, or no key verifies
    its signature): the provider may have rotated its keys."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def allowed_algorithms(advertised: Iterable[str]) -> frozenset[str]:
    """The ID token algorithms to accept: those the provider advertises that are
    asymmetric."""
    return frozenset(advertised) & ASYMMETRIC


class KeySet:
    """A provider's published signing keys (its JWKS), as JSON Web Keys; PyJWT key objects
    are built on first use and kept."""

    def __init__(self, document: Any) -> None:
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise ValueError("the key set has no 'keys' list")
        self.keys: list[dict[str, Any]] = [
            key
            for key in keys
            if isinstance(key, dict)
            and key.get("kty") in ("RSA", "EC", "OKP")
            and key.get("use", "sig") == "sig"
        ]
        """The published keys usable for signatures (symmetric and encryption keys left out)."""
        if not self.keys:
            raise ValueError("the key set holds no public signing key")
        self._built: dict[tuple[int, str], jwt.PyJWK] = {}

    @property
    def kids(self) -> list[str]:
        """The ``kid`` of every key (those without one left out)."""
        return [str(key["kid"]) for key in self.keys if "kid" in key]

    def candidates(self, alg: str, kid: str | None) -> list[jwt.PyJWK]:
        """The keys that may have signed a token with this ``alg`` and ``kid``: of the
        algorithm's key type, published for it (or for no particular algorithm), with that
        ``kid`` when the token names one."""
        found = []
        for index, key in enumerate(self.keys):
            if key.get("kty") != _FAMILY[alg] or key.get("alg", alg) != alg:
                continue
            if kid is not None and key.get("kid") != kid:
                continue
            built = self._built.get((index, alg))
            if built is None:
                try:
                    built = jwt.PyJWK(key, algorithm=alg)
                except jwt.PyJWTError:
                    continue  # malformed, or a curve PyJWT does not know: not a candidate
                self._built[(index, alg)] = built
            found.append(built)
        return found


def read_header(token: str, algorithms: frozenset[str], provider: str) -> tuple[str, str | None]:
    """The token's ``alg`` and ``kid`` (``None`` when it has none), once the algorithm is
    checked against ``algorithms``."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise LoginRefusedError("malformed ID token", provider=provider) from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise LoginRefusedError(
            f"ID token algorithm {alg!r} is not allowed (allowed: {', '.join(sorted(algorithms))})",
            provider=provider,
        )
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise LoginRefusedError("malformed ID token (kid is not a string)", provider=provider)
    return alg, kid


def unverified_claims(token: str, provider: str) -> dict[str, Any]:
    """The token's claims before any check: only to find which issuer to expect (Entra ID's
    ``tid``); the signature check that follows covers them."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise LoginRefusedError("malformed ID token", provider=provider) from None
    return dict(claims)


def verify_signature_and_times(
    token: str,
    keys: Sequence[jwt.PyJWK],
    alg: str,
    *,
    issuer: str,
    audience: str,
    leeway: float,
    provider: str,
) -> dict[str, Any]:
    """The claims of ``token`` once one of ``keys`` verifies its signature and ``iss``,
    ``aud``, ``exp``, ``iat`` and ``nbf`` pass. :class:`NoKeyVerifiedError` when no key
    verifies it; :class:`LoginRefusedError` for anything else."""
    if not keys:
        raise NoKeyVerifiedError("no published key fits the token's kid and algorithm")
    for key in keys:
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer,
                leeway=leeway,
                options={"require": REQUIRED},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise LoginRefusedError(_reason(exc), provider=provider) from None
        return dict(claims)
    raise NoKeyVerifiedError("bad signature: no published key verifies it")


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "ID token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "ID token not valid yet (iat or nbf in the future)"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "ID token for another audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "ID token from another issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"ID token without {exc.claim!r}"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "ID token algorithm does not match its key"
    return f"invalid ID token ({type(exc).__name__})"


def check_claims(claims: Mapping[str, Any], *, client_id: str, nonce: str, provider: str) -> None:
    """Check what a valid signature does not: ``sub``, ``azp`` and ``nonce``."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise LoginRefusedError("ID token without a usable 'sub'", provider=provider)
    audiences = claims.get("aud")
    azp = claims.get("azp")
    if azp is not None and azp != client_id:
        raise LoginRefusedError("ID token authorized for another party (azp)", provider=provider)
    if azp is None and isinstance(audiences, list) and len(audiences) > 1:
        raise LoginRefusedError("ID token for several audiences without azp", provider=provider)
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise LoginRefusedError(
            "ID token nonce does not match the login's" if got else "ID token without nonce",
            provider=provider,
        )
