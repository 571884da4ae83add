"""Identity providers for the OIDC tests, and a browser's part of the redirect flow.

* :class:`MockProvider`: the real OpenID provider of ``oidc-provider-mock`` (0.3.x) as a
  subprocess on a free loopback port, restartable on the same port (each start makes a new
  RSA signing key: a real key rotation). Its sign-in page is an HTML form; :func:`sign_in`
  submits it as a browser would. Its ID tokens carry no ``kid``.
* :class:`FakeProvider`: a small provider served from a thread of the test process, whose
  ID tokens the test shapes (forged, expired, for another audience...), whose keys carry a
  ``kid`` and can be rotated, and which also serves Entra ID's paths and multi-tenant
  discovery document (``issuer`` with ``{tenantid}``), which the mock cannot. Its token
  endpoint checks the code, the redirect URI, the client and the PKCE verifier.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from redis_support import free_port

from hubbub.contracts import LoginAttempt

__all__ = [
    "REDIRECT_URI",
    "FakeProvider",
    "MockProvider",
    "TokenShaper",
    "attempt_for",
    "follow",
    "rsa_key",
    "sign_in",
]

REDIRECT_URI = "http://127.0.0.1:8000/api/auth/oidc/callback"
"""Where providers send the browser back (nothing listens there: the tests read the
redirect's query instead of following it, as the server's callback route would)."""

READY_TIMEOUT = 30.0
"""Seconds a provider process may take to answer its discovery URL (a busy machine)."""


def attempt_for(method: str = "oidc", provider: str = "", **changes: str) -> LoginAttempt:
    """A login attempt as the server makes one: fresh random state, nonce and verifier."""
    values = {
        "method": method,
        "provider": provider,
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        "code_verifier": secrets.token_urlsafe(48),
        "redirect_uri": REDIRECT_URI,
        **changes,
    }
    return LoginAttempt(**values)


def callback_params(location: str) -> dict[str, str]:
    """The query of a redirect to :data:`REDIRECT_URI`, as the callback route receives it."""
    assert location.startswith(REDIRECT_URI + "?"), location
    return dict(parse_qsl(urlsplit(location).query))


# -- oidc-provider-mock as a process ----------------------------------------------------------


class MockProvider:
    """``python -m oidc_provider_mock`` on 127.0.0.1, its output in ``log_path``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        """Its issuer (the mock names itself after the host it is asked at)."""
        self.log_path = directory / "oidc-provider-mock.log"
        self.users: dict[str, dict[str, Any]] = {}
        """Users (sub -> claims) set on every start: the mock forgets them when it stops."""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers its discovery URL; set the users."""
        assert self.process is None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "oidc_provider_mock",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"oidc-provider-mock exited: {self.log_path.read_text()[-2000:]}"
                )
            try:
                httpx.get(
                    f"{self.url}/.well-known/openid-configuration", timeout=2
                ).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("oidc-provider-mock did not start") from None
                time.sleep(0.1)
        for sub, claims in self.users.items():
            httpx.put(f"{self.url}/users/{sub}", json=claims, timeout=5).raise_for_status()

    def stop(self) -> None:
        """Stop it (its keys, users and codes are gone)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port: a new signing key."""
        self.stop()
        self.start()

    def set_user(self, sub: str, **claims: Any) -> None:
        """Create or replace user ``sub`` with ``claims`` (kept across restarts)."""
        self.users[sub] = claims
        if self.process is not None:
            httpx.put(f"{self.url}/users/{sub}", json=claims, timeout=5).raise_for_status()

    def jwks(self) -> dict[str, Any]:
        """Its published keys now."""
        keys: dict[str, Any] = httpx.get(f"{self.url}/jwks", timeout=5).json()
        return keys

    def requests_for(self, path: str) -> int:
        """How many ``GET path`` requests it has logged (all runs on this port)."""
        text = self.log_path.read_text(errors="replace")
        return len(re.findall(rf'"GET {re.escape(path)} HTTP/1\.1" 200', text))

    def wait_for_requests(self, path: str, count: int, timeout: float = 10.0) -> int:
        """:meth:`requests_for`, once it reaches ``count`` (the mock logs a request just after
        answering it) or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while (seen := self.requests_for(path)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return seen


async def sign_in(url: str, sub: str | None, *, deny: bool = False) -> dict[str, str]:
    """Do the browser's part at the mock: open the authorization ``url``, submit its form as
    user ``sub`` (or press Deny), and return the query of the redirect back to
    :data:`REDIRECT_URI`."""
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get(url)
        assert page.status_code == 200, page.text[:500]
        assert re.search(r'<form method="post"', page.text)
        assert 'name="sub"' in page.text
        # The form has no action: a browser posts it to the page's own URL.
        form = {"action": "deny"} if deny else {"sub": sub or ""}
        answer = await browser.post(url, data=form)
    assert answer.status_code == 302, answer.text[:500]
    return callback_params(answer.headers["location"])


async def follow(url: str) -> dict[str, str]:
    """The browser's part at :class:`FakeProvider`, which signs its configured user in at
    once: open ``url`` and return the query of the redirect back."""
    async with httpx.AsyncClient(timeout=10) as browser:
        answer = await browser.get(url)
    assert answer.status_code == 302, answer.text[:500]
    return callback_params(answer.headers["location"])


# -- a provider of our own, in a thread --------------------------------------------------------


@functools.cache
def rsa_key(index: int) -> rsa.RSAPrivateKey:
    """The ``index``-th test RSA key (made once per test session: they are slow to make)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    """The public JWK of ``key``, named ``kid``."""
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


TokenShaper = Callable[[dict[str, Any], "FakeProvider"], str]
"""Makes the ID token of a login from its claims (the test's way to forge one)."""

MULTI_TENANT = ("common", "organizations", "consumers")


class FakeProvider:
    """An OpenID provider in a thread of the test process (see the module's docstring).

    Generic paths: ``/.well-known/openid-configuration``, ``/authorize``, ``/token``,
    ``/jwks``. Entra ID paths: ``/<tenant>/v2.0/.well-known/openid-configuration``,
    ``/<tenant>/oauth2/v2.0/authorize`` and ``/token``, with issuer
    ``<url>/{tenantid}/v2.0`` for ``organizations``, ``common`` and ``consumers`` and
    ``<url>/<tenant>/v2.0`` otherwise; an Entra ID token's ``iss`` names its ``tid``.
    """

    def __init__(self) -> None:
        self.keys: list[tuple[str, rsa.RSAPrivateKey]] = [("k1", rsa_key(0))]
        """Published keys (kid, key); the last one signs."""
        self.claims: dict[str, Any] = {"sub": "user-1"}
        """Claims of the next ID tokens, over the defaults (iss, aud, iat, exp, nonce)."""
        self.shape: TokenShaper | None = None
        """Makes the ID token instead of a plain signature with the signing key."""
        self.discovery: dict[str, Any] = {}
        """Changes to the discovery documents."""
        self.client_secret: str | None = "s3cret"
        """The client's secret (``None``: a public client)."""
        self.hits: Counter[str] = Counter()
        """Requests by path."""
        self.token_requests: list[dict[str, str]] = []
        """What each token request carried (its form, and ``auth``: basic, post or none)."""
        self._codes: dict[str, dict[str, str]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- what the tests change ---------------------------------------------------------------

    @property
    def signing(self) -> tuple[str, rsa.RSAPrivateKey]:
        """The key that signs (kid, key)."""
        return self.keys[-1]

    def rotate(self, kid: str, index: int, *, keep_old: bool = False) -> None:
        """Sign with a new key ``kid`` from now on (the old one stays published if
        ``keep_old``)."""
        self.keys = [*self.keys, (kid, rsa_key(index))] if keep_old else [(kid, rsa_key(index))]

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        """``claims`` signed with the signing key (RS256, its kid), ``headers`` added."""
        kid, key = self.signing
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, **headers})

    def issuer(self, tenant: str | None = None, tid: str | None = None) -> str:
        """The issuer of the generic paths, or of tenant ``tenant``'s (with ``tid``
        substituted, when given)."""
        if tenant is None:
            return self.url
        if tenant in MULTI_TENANT:
            return f"{self.url}/{tid or '{tenantid}'}/v2.0"
        return f"{self.url}/{tenant}/v2.0"

    # -- the protocol --------------------------------------------------------------------------

    def _document(self, tenant: str | None) -> dict[str, Any]:
        base = self.url if tenant is None else f"{self.url}/{tenant}/oauth2/v2.0"
        document = {
            "issuer": self.issuer(tenant),
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        }
        document.update(self.discovery)
        return document

    def _authorize(self, tenant: str | None, query: dict[str, str]) -> tuple[int, dict[str, str]]:
        code = secrets.token_urlsafe(16)
        self._codes[code] = {**query, "tenant": tenant or ""}
        back = {"code": code, "state": query.get("state", "")}
        return 302, {"Location": f"{query['redirect_uri']}?{urlencode(back)}"}

    def _token(
        self, tenant: str | None, form: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        if authorization and authorization.startswith("Basic "):
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
            how = "basic"
        elif "client_secret" in form:
            client_id, secret, how = form.get("client_id", ""), form["client_secret"], "post"
        else:
            client_id, secret, how = form.get("client_id", ""), "", "none"
        self.token_requests.append({**form, "auth": how})
        request = self._codes.pop(form.get("code", ""), None)
        if request is None or request["tenant"] != (tenant or ""):
            return 400, {"error": "invalid_grant", "error_description": "unknown code"}
        if (secret or None) != self.client_secret or client_id != request["client_id"]:
            return 401, {"error": "invalid_client"}
        if form.get("redirect_uri") != request["redirect_uri"]:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if challenge.rstrip(b"=").decode() != request.get("code_challenge") or (
            request.get("code_challenge_method") != "S256"
        ):
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification"}
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": request["client_id"],
            "iat": now,
            "exp": now + 300,
            "nonce": request.get("nonce"),
            **self.claims,
        }
        if "iss" not in self.claims:
            claims["iss"] = self.issuer(tenant or None, tid=self.claims.get("tid"))
        id_token = self.shape(claims, self) if self.shape else self.sign(claims)
        return 200, {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        form: dict[str, str],
        authorization: str | None,
    ) -> tuple[int, dict[str, str], bytes]:
        entra = re.fullmatch(
            r"/([^/]+)/(v2\.0/\.well-known/openid-configuration|oauth2/v2\.0/(authorize|token))",
            path,
        )
        tenant = entra.group(1) if entra else None
        tail = entra.group(2) if entra else path.lstrip("/")
        status: int
        body: Any
        headers: dict[str, str] = {}
        if method == "GET" and tail.endswith(".well-known/openid-configuration"):
            status, body = 200, self._document(tenant)
        elif method == "GET" and tail == "jwks" and tenant is None:
            status, body = 200, {"keys": [public_jwk(key, kid) for kid, key in self.keys]}
        elif method == "GET" and tail.endswith("authorize"):
            status, headers = self._authorize(tenant, query)
            body = None
        elif method == "POST" and tail.endswith("token"):
            status, body = self._token(tenant, form, authorization)
        else:
            status, body = 404, {"error": "not found"}
        if body is None:
            return status, headers, b""
        return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                parts = urlsplit(self.path)
                provider.hits[parts.path] += 1
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode())) if length else {}
                status, headers, body = provider._route(
                    method,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    form,
                    self.headers.get("Authorization"),
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung provider)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])
