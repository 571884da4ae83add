"""Access tokens: signed by a keyring, verified strictly; every known JWT attack refused with
a reason of its own (the client only ever sees one generic 401)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from hubbub.auth.tokens import Keyring, TokenError

ISS, AUD = "https://hubbub.test", "hubbub"


def issue(keyring: Keyring, **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "subject": "alice",
        "session_id": "ses_1",
        "issuer": ISS,
        "audience": AUD,
    }
    fields.update(overrides)
    return keyring.issue(**fields)


def refused(keyring: Keyring, token: str, **kwargs: Any) -> str:
    with pytest.raises(TokenError) as caught:
        keyring.verify(token, issuer=ISS, audience=AUD, **kwargs)
    assert caught.value.status == 401
    assert str(caught.value) == "the access token is not valid"  # the same for every reason
    return caught.value.reason


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256", "HS256"])
def test_a_token_verifies_with_its_claims(algorithm: Any) -> None:
    keyring = Keyring.generate(algorithm)
    token = issue(keyring, scopes=frozenset({"chat", "read"}))
    claims = keyring.verify(token, issuer=ISS, audience=AUD)
    assert (claims.sub, claims.sid, claims.iss, claims.aud) == ("alice", "ses_1", ISS, AUD)
    assert claims.scope == "chat read"
    assert claims.exp - claims.iat == 300
    assert claims.jti.startswith("tok_")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": algorithm, "kid": keyring.signing.kid, "typ": "JWT"}


def test_alg_none_is_refused() -> None:
    keyring = Keyring.generate()
    claims = jwt.decode(issue(keyring), options={"verify_signature": False})
    for alg in ("none", "None", "NONE"):
        forged = f"{b64({'alg': alg, 'kid': keyring.signing.kid})}.{b64(claims)}."
        assert refused(keyring, forged) == "unsigned (alg none)"


def test_algorithm_confusion_is_refused() -> None:
    # An HS256 token whose secret is the published public key: the classic confusion.
    keyring = Keyring.generate("RS256")
    public = keyring.signing.verifier.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(issue(keyring), options={"verify_signature": False})
    header = {"alg": "HS256", "kid": keyring.signing.kid, "typ": "JWT"}
    signing_input = f"{b64(header)}.{b64(claims)}".encode()
    import hashlib
    import hmac

    signature = hmac.new(public, signing_input, hashlib.sha256).digest()
    forged = f"{signing_input.decode()}.{b64(signature)}"
    assert "not its key's" in refused(keyring, forged)


def test_an_unknown_kid_and_a_foreign_key_are_refused() -> None:
    keyring, other = Keyring.generate(), Keyring.generate()
    assert refused(keyring, issue(other)) == "unknown key id"
    # the right kid, signed by another key: a bad signature
    token = jwt.encode(
        jwt.decode(issue(keyring), options={"verify_signature": False}),
        other.signing.private,
        algorithm="EdDSA",
        headers={"kid": keyring.signing.kid},
    )
    assert refused(keyring, token) == "bad signature"
    no_kid = jwt.encode({"sub": "x"}, keyring.signing.private, algorithm="EdDSA")
    assert refused(keyring, no_kid) == "unknown key id"


def test_wrong_issuer_audience_and_times_are_refused() -> None:
    keyring = Keyring.generate()
    assert refused(keyring, issue(keyring, issuer="https://evil.test")) == "wrong issuer"
    assert refused(keyring, issue(keyring, audience="another-app")) == "wrong audience"
    old = time.time() - 3600
    assert refused(keyring, issue(keyring, now=old)) == "expired"
    future = time.time() + 3600
    assert refused(keyring, issue(keyring, now=future)) == "not valid yet"  # iat ahead
    # within the leeway, a little skew is fine
    skewed = issue(keyring, now=time.time() + 10)
    assert keyring.verify(skewed, issuer=ISS, audience=AUD).sub == "alice"


@pytest.mark.parametrize("missing", ["exp", "iat", "iss", "aud", "sub", "sid"])
def test_every_required_claim_is_required(missing: str) -> None:
    keyring = Keyring.generate()
    claims = jwt.decode(issue(keyring), options={"verify_signature": False})
    del claims[missing]
    token = jwt.encode(
        claims, keyring.signing.private, algorithm="EdDSA", headers={"kid": keyring.signing.kid}
    )
    assert refused(keyring, token) == f"missing claim {missing!r}"


def test_not_before_in_the_future_is_refused() -> None:
    keyring = Keyring.generate()
    claims = jwt.decode(issue(keyring), options={"verify_signature": False})
    claims["nbf"] = int(time.time()) + 600
    token = jwt.encode(
        claims, keyring.signing.private, algorithm="EdDSA", headers={"kid": keyring.signing.kid}
    )
    assert refused(keyring, token) == "not valid yet"


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b", "a.b.c.d", "!!!.e30.x", f"{b64(b'[1]')}.e30.x", "x" * 9000]
)
def test_garbage_is_refused(token: str) -> None:
    refused(Keyring.generate(), token)


def test_a_tampered_payload_is_refused() -> None:
    keyring = Keyring.generate()
    header, payload, signature = issue(keyring).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    assert refused(keyring, f"{header}.{b64(claims)}.{signature}") == "bad signature"


def test_rotation_keeps_old_tokens_until_the_old_key_retires() -> None:
    keyring = Keyring.generate()
    old_token = issue(keyring)
    moment = time.time()
    rotated = keyring.rotated(retire_after=600, now=moment)
    assert rotated.signing.kid != keyring.signing.kid
    new_token = issue(rotated)
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.signing.kid
    assert rotated.verify(old_token, issuer=ISS, audience=AUD).sub == "alice"
    assert rotated.verify(new_token, issuer=ISS, audience=AUD).sub == "alice"
    assert refused(rotated, old_token, now=moment + 601) == "signed by a retired key"
    # a second rotation drops what was retired already
    again = rotated.rotated(retire_after=600, now=moment + 700)
    assert keyring.signing.kid not in again.keys
    assert len(again.keys) == 2


def test_the_jwks_publishes_public_keys_only() -> None:
    keyring = Keyring.generate().rotated(retire_after=600)
    jwks = keyring.jwks()
    assert {key["kid"] for key in jwks["keys"]} == set(keyring.keys)
    for key in jwks["keys"]:
        assert key["kty"] == "OKP"
        assert key["alg"] == "EdDSA"
        assert "d" not in key  # no private part
    assert Keyring.generate("HS256").jwks() == {"keys": []}
    # a client verifies with the published key
    token = issue(keyring)
    published = {key["kid"]: jwt.PyJWK(key).key for key in jwks["keys"]}
    public = published[jwt.get_unverified_header(token)["kid"]]
    assert jwt.decode(token, public, algorithms=["EdDSA"], audience=AUD)["sub"] == "alice"


def test_no_secret_goes_into_a_token() -> None:
    keyring = Keyring.generate("HS256")
    token = issue(keyring)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "sub", "sid", "iat", "exp", "jti"}
    assert keyring.signing.private.hex() not in token


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256", "HS256"])
def test_a_keyring_survives_its_file(algorithm: Any) -> None:
    from hubbub.auth.tokens import dump_keyring, load_keyring

    keyring = Keyring.generate(algorithm).rotated(retire_after=600)
    token = issue(keyring)
    loaded = load_keyring(dump_keyring(keyring))
    assert set(loaded.keys) == set(keyring.keys)
    assert loaded.signing.kid == keyring.signing.kid
    assert loaded.verify(token, issuer=ISS, audience=AUD).sub == "alice"
    assert keyring.verify(issue(loaded), issuer=ISS, audience=AUD).sub == "alice"
    with pytest.raises(ValueError, match="not a keyring file"):
        load_keyring(b'{"keys": 5}')


def test_a_remembered_token_is_still_checked_for_expiry_key_and_audience() -> None:
    keyring = Keyring.generate()
    token = issue(keyring)
    moment = time.time()
    first = keyring.verify(token, issuer=ISS, audience=AUD, now=moment)
    assert keyring.verify(token, issuer=ISS, audience=AUD, now=moment) == first  # remembered
    # remembered for this issuer and audience only
    with pytest.raises(TokenError) as caught:
        keyring.verify(token, issuer=ISS, audience="another-app", now=moment)
    assert caught.value.reason == "wrong audience"
    # past its expiry (and the leeway), remembered or not, it is refused
    assert refused(keyring, token, now=first.exp + 31) == "expired"
    # its key retired after it was remembered: refused
    rotated = keyring.rotated(retire_after=60, now=moment)
    assert rotated.verify(token, issuer=ISS, audience=AUD, now=moment).sub == "alice"
    assert refused(rotated, token, now=moment + 61) == "signed by a retired key"


def test_the_remembered_tokens_are_bounded() -> None:
    from hubbub.auth import tokens

    keyring = Keyring.generate("HS256")
    for n in range(tokens.REMEMBERED + 50):
        keyring.verify(issue(keyring, subject=f"u{n}"), issuer=ISS, audience=AUD)
    assert len(keyring._verified) == tokens.REMEMBERED


def test_a_rotated_in_key_verifies_at_once_and_signs_later() -> None:
    keyring = Keyring.generate()
    moment = time.time()
    rotated = keyring.rotated(retire_after=600, activate_after=10, now=moment)
    fresh = max(rotated.keys.values(), key=lambda key: key.created_at)
    assert fresh.kid != keyring.signing.kid
    assert rotated.signing_at(moment + 5).kid == keyring.signing.kid  # not yet
    assert rotated.signing_at(moment + 11).kid == fresh.kid
    # a token the new key signs (another process that activated it first) verifies already
    other = Keyring([fresh])
    token = other.issue(subject="alice", session_id="ses_1", issuer=ISS, audience=AUD)
    assert rotated.verify(token, issuer=ISS, audience=AUD).sub == "alice"
    # the old key verifies until activation plus its retirement delay
    old_kid = keyring.signing.kid
    assert rotated.keys[old_kid].retire_at == pytest.approx(moment + 610)


def test_retired_keys_are_not_published() -> None:
    moment = time.time()
    keyring = Keyring.generate().rotated(retire_after=0.05, now=moment)
    assert len(keyring.jwks()["keys"]) == 2
    time.sleep(0.1)
    assert [key["kid"] for key in keyring.jwks()["keys"]] == [keyring.signing.kid]


def _stored(algorithm: str, private: str) -> bytes:
    return json.dumps(
        {"version": 1, "keys": [{"kid": "k1", "algorithm": algorithm, "private": private,
                                 "created_at": 1.0}]}
    ).encode()  # fmt: skip


def test_weak_or_mismatched_keys_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from hubbub.auth.tokens import load_keyring

    def pem(key: Any, password: bytes | None = None) -> str:
        protection: Any = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return str(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection
            ).decode()
        )

    short = base64.urlsafe_b64encode(b"x" * 8).decode()
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    edwards = ed25519.Ed25519PrivateKey.generate()
    for data, message in [
        (_stored("HS256", short), "at least 32 bytes"),
        (_stored("RS256", pem(small_rsa)), "at least 2048 bits"),
        (_stored("EdDSA", pem(small_rsa)), "needs an Ed25519 key"),
        (_stored("RS256", pem(edwards)), "needs an RSA key"),
        (_stored("EdDSA", pem(edwards, b"secret")), "not a usable private key"),
        (_stored("EdDSA", "-----BEGIN PRIVATE KEY-----\ngarbage\n"), "not a usable private"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_keyring(data)
    with pytest.raises(ValueError, match="version 2"):
        load_keyring(b'{"version": 2, "keys": []}')
