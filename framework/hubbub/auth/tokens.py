"""Access tokens: short-lived JWTs signed by a keyring, and their strict validation.

A :class:`Keyring` holds several keys, each with a ``kid``: one signs, the others only verify
until they are retired (a rotation adds a key that signs and keeps the previous one verifying
for as long as its tokens live). EdDSA (Ed25519) by default, RS256 when configured, HS256 only
when configured explicitly (a shared secret: it can sign as well as verify, and it is never
published). :meth:`Keyring.jwks` gives the public keys for ``/.well-known/jwks.json``.

:meth:`Keyring.verify` pins the algorithm to the key named by ``kid`` (never the header's
choice), requires ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` and ``sid``, allows ``leeway``
seconds of clock skew, and refuses ``alg: none``, algorithm confusion (an HS256 token made with a
public key), an unknown or retired ``kid``, a wrong issuer or audience, and expired or
not-yet-valid tokens. Each refusal is a :class:`TokenError` whose ``reason`` says which, for the
log; callers answer every one with the same generic 401. Tokens carry identifiers only, never a
secret. ::

    keyring = Keyring.generate()
    token = keyring.issue(subject="alice", session_id="ses_1", issuer="hubbub", audience="hubbub")
    claims = keyring.verify(token, issuer="hubbub", audience="hubbub")
    assert claims.sub == "alice"
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from hubbub.errors import AuthenticationError
from hubbub.models import new_id

__all__ = [
    "AccessClaims",
    "Algorithm",
    "Keyring",
    "SigningKey",
    "TokenError",
    "dump_keyring",
    "load_keyring",
]

Algorithm = Literal["EdDSA", "RS256", "HS256"]
"""The signing algorithms a key may use."""

REQUIRED = ("exp", "iat", "iss", "aud", "sub", "sid")
"""Claims every access token must carry."""

REMEMBERED = 4096
"""Tokens a keyring remembers as verified (the most recently used ones)."""


class TokenError(AuthenticationError):
    """A token was refused; ``reason`` says why (for the log, never for the client)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__("the access token is not valid")


class AccessClaims(msgspec.Struct, kw_only=True, frozen=True):
    """What a valid access token says."""

    sub: str
    """The principal's id."""
    sid: str
    """The session the token belongs to (revoking it refuses the token)."""
    iss: str
    """Who issued it."""
    aud: str
    """Who it is for."""
    iat: int
    """When it was issued (Unix seconds)."""
    exp: int
    """When it expires (Unix seconds)."""
    jti: str = ""
    """The token's own id."""
    scope: str = ""
    """Space-separated scopes; empty: no restriction beyond the roles."""
    nbf: int | None = None
    """Not valid before (Unix seconds), if set."""


@dataclass(frozen=True)
class SigningKey:
    """One key of a keyring."""

    kid: str
    """Its id, in every token it signs."""
    algorithm: Algorithm
    """What it signs with."""
    private: Any
    """The private key (a cryptography key object), or the secret bytes for HS256."""
    created_at: float
    """When it was made (Unix seconds)."""
    retire_at: float | None = None
    """When it stops verifying (Unix seconds); ``None`` while it is in use."""
    activate_at: float | None = None
    """When it starts signing (Unix seconds): a rotated-in key verifies at once but signs only
    once every process has had time to load it; ``None``: from its creation."""

    def signs_at(self, moment: float) -> bool:
        """Whether it may sign at ``moment``."""
        return (self.activate_at is None or self.activate_at <= moment) and (
            self.retire_at is None or self.retire_at > moment
        )

    def retired_at(self, moment: float) -> bool:
        """Whether it has stopped verifying at ``moment``."""
        return self.retire_at is not None and self.retire_at <= moment

    @property
    def verifier(self) -> Any:
        """What verifies its signatures: the public key, or the secret for HS256."""
        return self.private if self.algorithm == "HS256" else self.private.public_key()

    def public_jwk(self) -> dict[str, Any] | None:
        """Its public JWK (``None`` for an HS256 secret, which is never published)."""
        if self.algorithm == "HS256":
            return None
        from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

        encoder: Any = OKPAlgorithm if self.algorithm == "EdDSA" else RSAAlgorithm
        jwk = json.loads(encoder.to_jwk(self.verifier))
        jwk.update(kid=self.kid, alg=self.algorithm, use="sig")
        return dict(jwk)


def _new_key(algorithm: Algorithm) -> Any:
    if algorithm == "HS256":
        return secrets.token_bytes(32)
    if algorithm == "RS256":
        from cryptography.hazmat.primitives.asymmetric import rsa

        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate()


class Keyring:
    """Signing keys: :attr:`signing` signs; every key not yet retired verifies."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not any(key.retire_at is None for key in keys):
            raise ValueError("a keyring needs a key that is not being retired")
        self.keys = {key.kid: key for key in keys}
        self._verified: OrderedDict[tuple[str, str, str], tuple[AccessClaims, SigningKey]] = (
            OrderedDict()
        )

    @property
    def signing(self) -> SigningKey:
        """The key that signs now: the newest one active and not retired."""
        return self.signing_at(time.time())

    def signing_at(self, moment: float) -> SigningKey:
        """The key that signs at ``moment``."""
        usable = [key for key in self.keys.values() if key.signs_at(moment)]
        if not usable:  # only keys still waiting to sign: the earliest to start does
            waiting = [key for key in self.keys.values() if key.retire_at is None]
            return min(waiting, key=lambda key: key.activate_at or key.created_at)
        return max(usable, key=lambda key: key.created_at)

    @classmethod
    def generate(cls, algorithm: Algorithm = "EdDSA") -> Keyring:
        """A keyring of one new key."""
        return cls([SigningKey(new_id("key_"), algorithm, _new_key(algorithm), time.time())])

    def rotated(
        self, *, retire_after: float, activate_after: float = 0.0, now: float | None = None
    ) -> Keyring:
        """A keyring with a new key that verifies at once and signs after ``activate_after``
        seconds (the time every process takes to load the new keyring); the keys in use stop
        verifying ``retire_after`` seconds after that (at least the access tokens' lifetime).
        Keys retired already are dropped."""
        moment = time.time() if now is None else now
        until = moment + activate_after + retire_after
        kept = []
        for key in self.keys.values():
            if key.retired_at(moment):
                continue
            if key.retire_at is None or key.retire_at > until:
                key = SigningKey(
                    key.kid,
                    key.algorithm,
                    key.private,
                    key.created_at,
                    retire_at=until,
                    activate_at=key.activate_at,
                )
            kept.append(key)
        algorithm = self.signing_at(moment).algorithm
        fresh = SigningKey(
            new_id("key_"),
            algorithm,
            _new_key(algorithm),
            moment,
            activate_at=moment + activate_after if activate_after > 0 else None,
        )
        return Keyring([*kept, fresh])

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify now, as ``/.well-known/jwks.json`` publishes them."""
        moment = time.time()
        keys = [key.public_jwk() for key in self.keys.values() if not key.retired_at(moment)]
        return {"keys": [key for key in keys if key is not None]}

    def issue(
        self,
        *,
        subject: str,
        session_id: str,
        issuer: str,
        audience: str,
        ttl: float = 300.0,
        scopes: frozenset[str] = frozenset(),
        now: float | None = None,
    ) -> str:
        """A signed access token for ``subject`` in session ``session_id``, valid ``ttl``
        seconds."""
        import jwt

        exact = time.time() if now is None else now
        moment = int(exact)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": subject,
            "sid": session_id,
            "iat": moment,
            "exp": moment + int(ttl),
            "jti": new_id("tok_"),
        }
        if scopes:
            claims["scope"] = " ".join(sorted(scopes))
        key = self.signing_at(exact)
        return jwt.encode(
            claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"}
        )

    def verify(
        self,
        token: str,
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        now: float | None = None,
    ) -> AccessClaims:
        """The claims of ``token`` if it is valid; :class:`TokenError` naming why not.

        A token verified once is remembered, keyed on the whole token with the issuer and
        audience asked for (the last :data:`REMEMBERED` of them): checking it again costs no
        signature verification, only its expiry and its key's retirement."""
        moment = time.time() if now is None else now
        remembered = self._verified.get((token, issuer, audience))
        if remembered is not None:
            claims, key = remembered
            if key.retire_at is not None and key.retire_at <= moment:
                raise TokenError("signed by a retired key")
            if claims.exp <= moment - leeway:
                raise TokenError("expired")
            self._verified.move_to_end((token, issuer, audience))
            return claims
        claims, key = self._verify(token, issuer, audience, leeway, moment)
        self._verified[(token, issuer, audience)] = (claims, key)
        if len(self._verified) > REMEMBERED:
            self._verified.popitem(last=False)
        return claims

    def _verify(
        self, token: str, issuer: str, audience: str, leeway: float, moment: float
    ) -> tuple[AccessClaims, SigningKey]:
        import jwt

        header = _header(token)
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError("unknown key id")
        if key.retire_at is not None and key.retire_at <= moment:
            raise TokenError("signed by a retired key")
        if header.get("alg") != key.algorithm:
            raise TokenError(f"algorithm {header.get('alg')!r} is not its key's")
        try:
            claims = jwt.decode(
                token,
                key.verifier,
                algorithms=[key.algorithm],
                issuer=issuer,
                audience=audience,
                leeway=leeway,
                options={"require": list(REQUIRED)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("not valid yet") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim {exc.claim!r}") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad signature") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed: {type(exc).__name__}") from None
        try:
            return msgspec.convert(claims, AccessClaims), key
        except msgspec.ValidationError as exc:
            raise TokenError(f"claims of the wrong type: {exc}") from None


_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""A JWS in compact form, strictly: unpadded base64url parts (so no two strings verify as
one token: a decoder that skips padding or stray bytes would otherwise accept both)."""


def _header(token: str) -> dict[str, Any]:
    """The token's header, decoded without trusting anything in it."""
    if not isinstance(token, str) or len(token) > 8192 or not _COMPACT.fullmatch(token):
        raise TokenError("not a JWT")
    encoded = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed header") from None
    if not isinstance(header, dict):
        raise TokenError("malformed header")
    if str(header.get("alg", "")).lower() == "none":
        raise TokenError("unsigned (alg none)")
    return header


class _StoredKey(msgspec.Struct, kw_only=True):
    """One key in a keyring file."""

    kid: str
    """Its id."""
    algorithm: Algorithm
    """What it signs with."""
    private: str
    """PKCS#8 PEM of the private key; for HS256, the secret in URL-safe base64."""
    created_at: float
    """When it was made (Unix seconds)."""
    retire_at: float | None = None
    """When it stops verifying (Unix seconds); ``None`` while it signs."""
    activate_at: float | None = None
    """When it starts signing (Unix seconds); ``None``: from its creation."""


class _StoredKeyring(msgspec.Struct, kw_only=True):
    """A keyring file."""

    version: int = 1
    """The file format's version."""
    keys: list[_StoredKey]
    """Every key, the signing one included."""


def dump_keyring(keyring: Keyring) -> bytes:
    """``keyring`` as the JSON of a keyring file (private keys included: keep it 0600)."""
    from cryptography.hazmat.primitives import serialization

    stored = []
    for key in keyring.keys.values():
        if key.algorithm == "HS256":
            private = base64.urlsafe_b64encode(key.private).decode()
        else:
            private = key.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
        stored.append(
            _StoredKey(
                kid=key.kid,
                algorithm=key.algorithm,
                private=private,
                created_at=key.created_at,
                retire_at=key.retire_at,
                activate_at=key.activate_at,
            )
        )
    return msgspec.json.encode(_StoredKeyring(keys=stored))


def load_keyring(data: bytes) -> Keyring:
    """The keyring a keyring file holds; :class:`ValueError` saying what is wrong (a key too
    weak for its algorithm or not of its kind, a protected or unreadable private key...)."""
    try:
        stored = msgspec.json.decode(data, type=_StoredKeyring)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a keyring file: {exc}") from None
    if stored.version != 1:
        raise ValueError(f"keyring file version {stored.version} is not known (1 is)")
    keys = [
        SigningKey(
            key.kid,
            key.algorithm,
            _private(key),
            key.created_at,
            key.retire_at,
            key.activate_at,
        )
        for key in stored.keys
    ]
    if len({key.kid for key in keys}) != len(keys):
        raise ValueError("two keys have one kid")
    return Keyring(keys)


def _private(key: _StoredKey) -> Any:
    """The private key of ``key``, checked against its algorithm."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if key.algorithm == "HS256":
        try:
            secret = base64.urlsafe_b64decode(key.private)
        except ValueError:
            raise ValueError(f"key {key.kid}: the secret is not base64") from None
        if len(secret) < 32:
            raise ValueError(f"key {key.kid}: an HS256 secret needs at least 32 bytes")
        return secret
    try:
        private = serialization.load_pem_private_key(key.private.encode(), password=None)
    except Exception as exc:  # malformed, protected by a passphrase, of an unknown kind...
        raise ValueError(f"key {key.kid}: not a usable private key ({exc})") from None
    if key.algorithm == "EdDSA" and not isinstance(private, ed25519.Ed25519PrivateKey):
        raise ValueError(f"key {key.kid}: EdDSA needs an Ed25519 key")
    if key.algorithm == "RS256":
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError(f"key {key.kid}: RS256 needs an RSA key")
        if private.key_size < 2048:
            raise ValueError(f"key {key.kid}: an RSA key needs at least 2048 bits")
    return private
