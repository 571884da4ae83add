"""A whole OpenID Connect sign-in through ``hubbub serve`` against a real provider process
(oidc-provider-mock): the browser goes to ``/api/auth/oidc/login``, on to the provider, back to
the callback with the state cookie, and ends with a hubbub session whose access token works
(roles mapped from the provider's groups). A callback without the browser's cookie, with a
replayed state or with a forged code is refused."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from live_support import LiveServer, assert_problem

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oidc_support import MockProvider


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockProvider]:
    mock = MockProvider(tmp_path_factory.mktemp("oidc"))
    mock.set_user(
        "alice",
        email="alice@example.com",
        email_verified=True,
        preferred_username="alice.smith",
        groups=["hubbub-admins"],
    )
    mock.set_user("bob", email="bob@example.com", email_verified=True, groups=["staff"])
    mock.start()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, provider: MockProvider
) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("oidc-server"),
        f"""
[auth]
methods = ["api_key", "local", "oidc"]
[[plugins.oidc_auth.providers]]
name = "corp"
issuer = "{provider.url}"
client_id = "hubbub"
client_secret = "mock-accepts-any-secret"
roles_claim = "groups"
role_map = {{ "hubbub-admins" = "admin" }}
""",
    )
    live.start()
    try:
        yield live
    finally:
        live.stop()


def browser_sign_in(server: LiveServer, sub: str) -> tuple[dict[str, str], httpx.Response]:
    """A browser (a cookie jar) signing in as ``sub``: its cookies after the callback, and the
    callback's response."""
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as browser:
        start = browser.get("/api/auth/oidc/login", params={"provider": "corp"})
        assert start.status_code == 302, start.text
        assert "hubbub_login_state" in browser.cookies
        authorize = start.headers["location"]
        assert "code_challenge_method=S256" in authorize
        page = browser.get(authorize)
        assert page.status_code == 200, page.text[:300]
        answer = browser.post(authorize, data={"sub": sub})
        assert answer.status_code == 302, answer.text[:300]
        back = answer.headers["location"]
        assert back.startswith(f"{server.url}/api/auth/oidc/callback")
        done = browser.get(back)
        return dict(browser.cookies), done


def test_a_full_sign_in_yields_a_hubbub_session(server: LiveServer) -> None:
    cookies, done = browser_sign_in(server, "alice")
    assert done.status_code == 200, done.text
    tokens: dict[str, Any] = done.json()
    assert "hubbub_login_state" not in cookies  # cleared
    assert tokens["session"]["auth_method"] == "oidc"
    principal_id = tokens["session"]["principal_id"]
    assert principal_id.startswith("corp-")
    with server.client(tokens["access_token"]) as client:
        created = client.post("/api/conversations", json={"title": "signed in elsewhere"})
        assert created.status_code == 201, created.text
        assert created.json()["owner"] == principal_id
        assert client.get("/api/admin/users").status_code == 200  # groups -> admin
        sessions = client.get("/api/auth/sessions").json()["sessions"]
        assert [s["session"]["id"] for s in sessions] == [tokens["session"]["id"]]
    with server.client() as client:
        refreshed = client.post(
            "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200


def test_the_same_person_gets_the_same_principal(server: LiveServer) -> None:
    first = browser_sign_in(server, "bob")
    second = browser_sign_in(server, "bob")
    ids = {done.json()["session"]["principal_id"] for _, done in (first, second)}
    assert len(ids) == 1
    [bob] = ids
    with server.client(second[1].json()["access_token"]) as client:
        assert_problem(client.get("/api/admin/users"), 403)  # staff is no admin
    assert bob.startswith("corp-")


def test_a_callback_without_the_browsers_cookie_is_refused(server: LiveServer) -> None:
    browser = httpx.Client(base_url=server.url, trust_env=False, timeout=10)
    with browser:
        start = browser.get("/api/auth/oidc/login")
        authorize = start.headers["location"]
        answer = browser.post(authorize, data={"sub": "alice"})
        back = answer.headers["location"]
    # another browser (an attacker's link) brings the callback: no state cookie
    with httpx.Client(trust_env=False, timeout=10) as other:
        assert_problem(other.get(back), 401)


def test_a_state_is_used_once(server: LiveServer) -> None:
    _, done = browser_sign_in(server, "alice")
    assert done.status_code == 200
    with httpx.Client(trust_env=False, timeout=10) as browser:
        browser.cookies.set("hubbub_login_state", _state(done))
        assert_problem(browser.get(str(done.request.url)), 401)


def test_a_forged_code_is_refused(server: LiveServer) -> None:
    browser = httpx.Client(base_url=server.url, trust_env=False, timeout=10)
    with browser:
        start = browser.get("/api/auth/oidc/login")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        forged = browser.get("/api/auth/oidc/callback", params={"state": state, "code": "made-up"})
        assert_problem(forged, 401)
    log = server.log()
    assert "made-up" not in log


def test_unknown_methods_and_providers_are_404(server: LiveServer) -> None:
    with server.client() as client:
        assert_problem(client.get("/api/auth/nope/login"), 404)
        assert_problem(client.get("/api/auth/local/login"), 404)  # not a redirect method
        assert_problem(client.get("/api/auth/oidc/login", params={"provider": "nope"}), 404)


def _state(done: httpx.Response) -> str:
    return parse_qs(urlsplit(str(done.request.url)).query)["state"][0]


def test_provider_accounts_are_listed_and_can_be_disabled(server: LiveServer) -> None:
    _, alice = browser_sign_in(server, "alice")  # an admin through the provider's groups
    _, bob = browser_sign_in(server, "bob")
    bob_id = bob.json()["session"]["principal_id"]
    with server.client(alice.json()["access_token"]) as admin:
        accounts = {a["id"]: a for a in admin.get("/api/admin/users").json()["users"]}
        assert bob_id in accounts
        assert accounts[bob_id]["has_password"] is False
        changed = admin.patch(f"/api/admin/users/{bob_id}", json={"disabled": True}).json()
        assert changed["sessions_ended"] >= 1
    with server.client(bob.json()["access_token"]) as client:
        assert_problem(client.get("/api/conversations"), 401)
    _, again = browser_sign_in(server, "bob")  # the provider still vouches for him: refused
    assert_problem(again, 401)
    with server.client(alice.json()["access_token"]) as admin:
        admin.patch(f"/api/admin/users/{bob_id}", json={"disabled": False})
    _, back = browser_sign_in(server, "bob")
    assert back.status_code == 200
