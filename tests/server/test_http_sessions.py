"""Sessions over real HTTP against ``hubbub serve``: local login, the access token on every
route (the official ``openai`` client included), refresh rotation and reuse detection, session
listing and revocation (another user's session is a 404), logout, rate-limited logins, JWKS,
every JWT attack answered with one generic 401, and revocation reaching an SSE stream and the
token on another process through a real Redis within a second."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from live_support import HUBBUB, Listener, LiveServer, assert_problem, running_pair
from redis_support import RedisServer

FAST = """
[passwords]
time_cost = 1
memory_cost = 8
[auth]
methods = ["api_key", "local"]
login_attempts = 5
"""
PASSWORD = "correct horse battery"


def add_user(server: LiveServer, name: str, *extra: str) -> None:
    done = subprocess.run(
        [HUBBUB, "users", "add", name, "--password-stdin", *extra],
        input=PASSWORD + "\n",
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"created user {name}" in done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("sessions"), FAST)
    for name in ("alice", "bob", "mallory"):
        add_user(live, name)
    live.start()
    try:
        yield live
    finally:
        live.stop()


def login(server: LiveServer, name: str = "alice", password: str = PASSWORD) -> dict[str, Any]:
    with server.client() as client:
        response = client.post("/api/auth/login", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"  # tokens are never cached
    body: dict[str, Any] = response.json()
    return body


def test_login_then_use_list_refresh_and_revoke(server: LiveServer) -> None:
    tokens = login(server)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    access = tokens["access_token"]
    with server.client(access) as client:
        created = client.post("/api/conversations", json={"title": "with a token"})
        assert created.status_code == 201, created.text
        assert created.json()["owner"] == "alice"
        listed = client.get("/api/auth/sessions").json()["sessions"]
        mine = [entry for entry in listed if entry["session"]["id"] == tokens["session"]["id"]]
        assert mine
        assert mine[0]["current"] is True
        assert mine[0]["session"]["auth_method"] == "local"
        assert mine[0]["session"]["user_agent"].startswith("python-httpx")
    with server.client() as client:
        refreshed = client.post(
            "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        again = client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert_problem(again, 401)
    # the reuse ended the session: both access tokens are refused now
    for token in (access, refreshed.json()["access_token"]):
        with server.client(token) as client:
            assert_problem(client.get("/api/conversations"), 401)


def test_delete_one_session_refuses_its_token_at_once(server: LiveServer) -> None:
    first, second = login(server), login(server)
    with server.client(first["access_token"]) as client:
        response = client.delete(f"/api/auth/sessions/{second['session']['id']}")
        assert response.status_code == 204, response.text
        assert client.get("/api/conversations").status_code == 200
    with server.client(second["access_token"]) as client:
        assert_problem(client.get("/api/conversations"), 401)


def test_another_users_session_is_a_404(server: LiveServer) -> None:
    bobs = login(server, "bob")
    mallory = login(server, "mallory")
    with server.client(mallory["access_token"]) as client:
        assert_problem(client.delete(f"/api/auth/sessions/{bobs['session']['id']}"), 404)
        listed = client.get("/api/auth/sessions").json()["sessions"]
        assert all(entry["session"]["principal_id"] == "mallory" for entry in listed)
    with server.client(bobs["access_token"]) as client:
        assert client.get("/api/conversations").status_code == 200


def test_logout_and_logout_all(server: LiveServer) -> None:
    one, two, three = login(server, "bob"), login(server, "bob"), login(server, "bob")
    with server.client(one["access_token"]) as client:
        assert client.post("/api/auth/logout").json() == {"revoked": 1}
        assert_problem(client.get("/api/conversations"), 401)
    with server.client(two["access_token"]) as client:
        assert client.post("/api/auth/logout", params={"all": "true"}).json()["revoked"] >= 2
    with server.client(three["access_token"]) as client:
        assert_problem(client.get("/api/conversations"), 401)


def test_wrong_credentials_get_one_generic_answer(server: LiveServer) -> None:
    with server.client() as client:
        details = set()
        for name, password in [("bob", "not the password"), ("nobody", PASSWORD)]:
            response = client.post("/api/auth/login", json={"username": name, "password": password})
            details.add(assert_problem(response, 401)["detail"])
        assert len(details) == 1
        assert_problem(
            client.post("/api/auth/login", json={"username": "x"}), 422, field="password"
        )
        assert_problem(client.post("/api/auth/refresh", json={"refresh_token": "hbr_x"}), 401)
    assert PASSWORD not in server.log()
    assert "not the password" not in server.log()


def test_failed_logins_are_limited_with_retry_after(server: LiveServer) -> None:
    add_user(server, "target")
    with server.client() as client:
        for _ in range(5):
            response = client.post(
                "/api/auth/login", json={"username": "target", "password": "guess guess"}
            )
            assert response.status_code == 401
        limited = client.post("/api/auth/login", json={"username": "target", "password": PASSWORD})
    assert_problem(limited, 429)
    assert 1 <= int(limited.headers["retry-after"]) <= 900


def test_jwks_publishes_public_keys_only(server: LiveServer) -> None:
    with server.client() as client:
        keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "OKP"
        assert "d" not in key  # no private part
        assert key["kid"]


def test_the_openai_client_works_with_an_access_token(server: LiveServer) -> None:
    import openai

    tokens = login(server)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=tokens["access_token"])
    reply = client.chat.completions.create(
        model="offline/echo", messages=[{"role": "user", "content": "hello"}]
    )
    assert "hello" in (reply.choices[0].message.content or "")


# -- JWT attacks: each one is a 401 with the same problem, its reason only in the log ------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(tokens: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return claims


def _header(tokens: dict[str, Any]) -> dict[str, Any]:
    header: dict[str, Any] = jwt.get_unverified_header(tokens["access_token"])
    return header


def _attacks(server: LiveServer) -> dict[str, str]:
    tokens = login(server, "mallory")
    claims, header = _claims(tokens), _header(tokens)
    token = tokens["access_token"]
    head, body, signature = token.split(".")
    with server.client() as client:
        jwk = next(k for k in client.get("/.well-known/jwks.json").json()["keys"])
    public_bytes = base64.urlsafe_b64decode(jwk["x"] + "==")
    own_key = Ed25519PrivateKey.generate()
    pem = own_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    def unsigned(changes: dict[str, Any], header_changes: dict[str, Any] | None = None) -> str:
        new_header = {**header, **(header_changes or {})}
        return (
            f"{_b64(json.dumps(new_header).encode())}."
            f"{_b64(json.dumps({**claims, **changes}).encode())}."
        )

    def own(changes: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(
            {**claims, **changes}, pem, algorithm="EdDSA", headers={"kid": kid or header["kid"]}
        )

    bob = _claims(login(server, "bob"))
    return {
        "alg none": unsigned({}, {"alg": "none"}),
        "alg none, sub changed": unsigned({"sub": "bob"}, {"alg": "none"}),
        "HS256 signed with the public key": jwt.encode(
            claims,
            public_bytes,
            algorithm="HS256",
            headers={"kid": header["kid"]},
        )
        if len(public_bytes) >= 14
        else "",
        "unknown kid": own({}, kid="key_doesnotexist"),
        "signed by another key, same kid": own({}),
        "tampered payload": f"{head}.{_b64(json.dumps({**claims, 'sub': 'bob'}).encode())}"
        f".{signature}",
        "someone else's session id": own({"sid": bob["sid"], "sub": "bob"}),
        "truncated signature": f"{head}.{body}.{signature[:-4]}",
        "no signature": f"{head}.{body}.",
        "garbage": "eyJhbGciOiJFZERTQSJ9.e30.AAAA",
    }


def test_every_jwt_attack_gets_the_same_401(server: LiveServer) -> None:
    attacks = _attacks(server)
    details = set()
    for name, token in attacks.items():
        if not token:
            continue
        with server.client(token) as client:
            response = client.get("/api/conversations")
        body = assert_problem(response, 401)
        details.add(body["detail"])
        assert response.status_code == 401, name
    assert len(details) == 1, details


def test_claims_the_server_did_not_sign_are_refused(server: LiveServer) -> None:
    """Wrong issuer, audience, expiry, missing claims: only the server's key could sign them, so
    they are made with a keyring file of the server's own (its data directory) to prove that the
    claims are checked, not just the signature."""
    from hubbub.auth.tokens import load_keyring

    keyring = load_keyring((server.home / "signing-keys.json").read_bytes())
    key = keyring.signing
    tokens = login(server, "mallory")
    claims = _claims(tokens)
    now = int(time.time())
    variants = {
        "wrong issuer": {**claims, "iss": "someone-else"},
        "wrong audience": {**claims, "aud": "another-app"},
        "expired": {**claims, "iat": now - 7200, "exp": now - 3600},
        "issued in the future": {**claims, "iat": now + 3600, "exp": now + 7200},
        "no sid": {k: v for k, v in claims.items() if k != "sid"},
        "no exp": {k: v for k, v in claims.items() if k != "exp"},
        "no aud": {k: v for k, v in claims.items() if k != "aud"},
    }
    for name, payload in variants.items():
        token = jwt.encode(payload, key.private, algorithm=key.algorithm, headers={"kid": key.kid})
        with server.client(token) as client:
            response = client.get("/api/conversations")
        assert response.status_code == 401, name
    with server.client(
        jwt.encode(claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid})
    ) as client:
        assert client.get("/api/conversations").status_code == 200  # the control
    log = server.log()
    for reason in ("issuer", "audience", "expired"):
        assert reason in log


# -- across processes --------------------------------------------------------------------


def test_revocation_reaches_a_stream_and_the_token_on_another_process(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    toml = FAST + f'[redis]\nurl = "{redis_server.url}"\n[events]\nbackend = "redis"\n'
    with running_pair(tmp_path, toml, keys=()) as (a, b):
        add_user(a, "carol")
        tokens = login(a, "carol")
        access = tokens["access_token"]
        with b.client(access) as client:
            assert client.get("/api/conversations").status_code == 200  # B checked it
        with Listener(b, access, "/api/events") as stream:
            with a.client(access) as client:
                response = client.delete(f"/api/auth/sessions/{tokens['session']['id']}")
                assert response.status_code == 204
            revoked_at = time.monotonic()
            event = stream.wait_for("session.revoked", timeout=10)
            assert event["session_id"] == tokens["session"]["id"]
            assert stream.ended.wait(10)  # and the stream closed
        with b.client(access) as client:
            while client.get("/api/conversations").status_code != 401:
                assert time.monotonic() - revoked_at < 1.0 + 0.5
                time.sleep(0.05)


# -- administration ------------------------------------------------------------------------


def test_admin_routes_are_for_admins_only(server: LiveServer) -> None:
    user = login(server, "bob")
    with server.client(user["access_token"]) as client:
        for method, path, body in [
            ("GET", "/api/admin/users", None),
            ("POST", "/api/admin/users", {"name": "eve", "admin": True}),
            ("GET", "/api/admin/users/alice", None),
            ("PATCH", "/api/admin/users/bob", {"admin": True}),
            ("GET", "/api/admin/users/alice/sessions", None),
            ("DELETE", "/api/admin/users/alice/sessions", None),
        ]:
            response = client.request(method, path, json=body)
            assert_problem(response, 403)
    with server.client() as client:
        assert_problem(client.get("/api/admin/users"), 401)


def test_an_admin_manages_accounts_and_cuts_sessions_off(server: LiveServer) -> None:
    add_user(server, "root", "--admin")
    admin = login(server, "root")
    with server.client(admin["access_token"]) as client:
        made = client.post(
            "/api/admin/users", json={"name": "dave", "password": PASSWORD, "email": "d@x.org"}
        )
        assert made.status_code == 201, made.text
        assert made.json()["roles"] == ["user"]
        assert "password_hash" not in made.text
        assert_problem(client.post("/api/admin/users", json={"name": "DAVE"}), 409)
        assert_problem(client.post("/api/admin/users", json={"name": "local"}), 422, field="name")
        dave = login(server, "dave")
        listed = client.get("/api/admin/users/dave/sessions").json()
        assert [s["id"] for s in listed] == [dave["session"]["id"]]
        changed = client.patch("/api/admin/users/dave", json={"disabled": True}).json()
        assert changed["account"]["disabled"] is True
        assert changed["sessions_ended"] == 1
        with server.client(dave["access_token"]) as as_dave:
            assert_problem(as_dave.get("/api/conversations"), 401)
        with server.client() as anonymous:
            refused = anonymous.post(
                "/api/auth/login", json={"username": "dave", "password": PASSWORD}
            )
            assert_problem(refused, 401)
        client.patch("/api/admin/users/dave", json={"disabled": False})
        promoted = login(server, "dave")
        made_admin = client.patch("/api/admin/users/dave", json={"admin": True}).json()
        assert made_admin["account"]["roles"] == ["admin", "user"]
        with server.client(promoted["access_token"]) as stale:
            assert_problem(stale.get("/api/conversations"), 401)  # roles changed: log in again
        fresh = login(server, "dave")
        with server.client(fresh["access_token"]) as as_admin:
            assert as_admin.get("/api/admin/users").status_code == 200
        assert_problem(client.get("/api/admin/users/nobody"), 404)
        assert_problem(
            client.patch("/api/admin/users/dave", json={"password": "short"}), 422, field="password"
        )


def test_a_stream_ends_when_its_session_ends_without_an_event(tmp_path: Path) -> None:
    """A session that ends with no revocation event (it expired and was purged, or the event
    was lost) still ends its streams: each heartbeat looks at the session."""
    import sqlite3

    live = LiveServer(tmp_path, FAST + "[server]\nheartbeat_interval = 0.5\n")
    add_user(live, "erin")
    live.start()
    try:
        tokens = login(live, "erin")
        with Listener(live, tokens["access_token"], "/api/events") as stream:
            with sqlite3.connect(live.home / "accounts.sqlite3") as db:  # as a purge would
                db.execute("DELETE FROM records WHERE kind = 'session'")
            event = stream.wait_for("session.revoked", timeout=10)
            assert event["session_id"] == tokens["session"]["id"]
            assert stream.ended.wait(10)
    finally:
        live.stop()


def test_a_scoped_key_cannot_manage_sessions_keys_or_accounts(server: LiveServer) -> None:
    """Scopes restrict what a credential may do: a key made for chat alone cannot list its
    owner's sessions, end them, make keys, or use the admin API (its owner an admin)."""
    add_user(server, "ops", "--admin")
    admin = login(server, "ops")
    with server.client(admin["access_token"]) as client:
        made = client.post("/api/keys", json={"name": "bot", "scopes": ["chat"]})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        full = client.post("/api/keys", json={"name": "ops", "roles": ["admin"]}).json()["key"]
    with server.client(key) as scoped:
        for method, path in [
            ("GET", "/api/auth/sessions"),
            ("DELETE", f"/api/auth/sessions/{admin['session']['id']}"),
            ("POST", "/api/auth/logout?all=true"),
            ("GET", "/api/keys"),
            ("GET", "/api/admin/users"),
            ("GET", "/api/admin/keys"),
        ]:
            assert_problem(scoped.request(method, path), 403)
        assert_problem(scoped.post("/api/keys", json={"name": "escape"}), 403)
        assert scoped.get("/v1/models").status_code == 200  # what it is for still works
    with server.client(full) as unscoped:
        assert unscoped.get("/api/admin/users").status_code == 200
    with server.client(admin["access_token"]) as client:
        assert client.get("/api/auth/sessions").status_code == 200  # the session is alive


def test_an_admin_lists_and_revokes_anyones_keys(server: LiveServer) -> None:
    add_user(server, "auditor", "--admin")
    auditor = login(server, "auditor")
    bob = login(server, "bob")
    with server.client(bob["access_token"]) as client:
        key = client.post("/api/keys", json={"name": "bob's laptop"}).json()
    with server.client(auditor["access_token"]) as admin:
        listed = admin.get("/api/admin/keys", params={"user": "bob"}).json()["keys"]
        assert key["id"] in {k["id"] for k in listed}
        assert all(k["owner"] == "bob" for k in listed)
        assert "hbk_" not in json.dumps(listed)  # never a secret
        assert admin.delete(f"/api/admin/keys/{key['id']}").status_code == 204
        assert_problem(admin.delete(f"/api/admin/keys/{key['id']}"), 404)
    with server.client(key["key"]) as revoked:
        assert_problem(revoked.get("/api/conversations"), 401)
    with server.client(bob["access_token"]) as client:
        assert_problem(client.delete(f"/api/admin/keys/{key['id']}"), 403)


def test_a_key_revoked_from_the_command_line_ends_its_streams(tmp_path: Path) -> None:
    """``hubbub keys revoke`` runs in its own process: with the in-process event log its
    revocation event reaches no server, yet the key's streams end at the next heartbeat."""
    live = LiveServer(tmp_path, FAST + "[server]\nheartbeat_interval = 0.5\n")
    key_id, key = live.create_key("frank")
    live.start()
    try:
        with Listener(live, key, "/api/events") as stream:
            done = live.hubbub("keys", "revoke", key_id)
            assert done.returncode == 0, done.stderr
            event = stream.wait_for("session.revoked", timeout=10)
            assert event["session_id"] == key_id
            assert stream.ended.wait(10)
    finally:
        live.stop()
