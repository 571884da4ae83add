"""What a web page can make the user's browser do to a local server, over real HTTP with the
headers browsers send: DNS rebinding (``Host``), cross-site requests (``Origin``,
``Sec-Fetch-Site``), bodies a page can post without a CORS preflight (``text/plain``, forms),
and CORS. Clients that are not browsers (no ``Origin``, ``Host`` as they connect) are served as
before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from live_support import LiveServer, assert_problem, running

from hubbub_server.browser import split_host

# Local mode (no key), so that a request needs nothing but the headers a page can make a
# browser send: exactly what these checks must stop.
TOML = """\
[server]
allowed_hosts = ["hubbub.internal", "proxy.example:8443", ".corp.example"]
cors_origins = ["https://app.example"]
"""
CHAT = {"model": "offline/echo", "messages": [{"role": "user", "content": "hi"}]}
JSON_BODY = b'{"title": "from a page"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("browser")
    with running(root, TOML) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def titles(client: httpx.Client) -> list[str]:
    listed = client.get("/api/conversations", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    return [item["title"] for item in listed.json()["items"]]


def post_conversation(client: httpx.Client, title: str, **headers: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", **headers}
    return client.post("/api/conversations", json={"title": title}, headers=headers)


# -- Host: DNS rebinding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["rebind.evil.example:{port}", "rebind.evil.example", "localhost.evil.example:{port}"],
)
def test_a_rebound_host_is_refused_and_nothing_is_done(
    server: LiveServer, client: httpx.Client, host: str
) -> None:
    host = host.format(port=server.port)
    for path in ("/health/live", "/v1/models", "/api/conversations"):
        body = assert_problem(client.get(path, headers={"Host": host}), 421)
        assert body["code"] == "host_not_allowed"
        assert "allowed_hosts" in body["detail"]
    # A page on the rebound name is same-origin with it: Origin agrees with Host.
    origin = f"http://{host}"
    refused = post_conversation(client, f"rebound via {host}", Host=host, Origin=origin)
    assert_problem(refused, 421)
    chat = client.post("/v1/chat/completions", json=CHAT, headers={"Host": host})
    assert assert_problem(chat, 421)["error"]["code"] == "host_not_allowed"  # OpenAI's shape
    assert f"rebound via {host}" not in titles(client)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "localhost:{port}",
        "LocalHost.:{port}",
        "[::1]:{port}",
        "localhost",  # no port: what a browser sends for port 80, and what proxies often send
        "hubbub.internal:{port}",
        "hubbub.internal:9999",  # an allowed name without a port: any port
        "proxy.example:8443",
        "corp.example:{port}",
        "api.corp.example",  # .corp.example: the domain and its subdomains
    ],
)
def test_the_servers_own_names_and_allowed_hosts_are_answered(
    server: LiveServer, client: httpx.Client, host: str
) -> None:
    response = client.get("/health/live", headers={"Host": host.format(port=server.port)})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "host",
    ["localhost:1", "127.0.0.1:{other}", "proxy.example:8444", "evilcorp.example", "[::2]:{port}"],
)
def test_a_wrong_port_or_a_near_miss_is_refused(
    server: LiveServer, client: httpx.Client, host: str
) -> None:
    host = host.format(port=server.port, other=server.port + 1)
    assert_problem(client.get("/health/live", headers={"Host": host}), 421)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("LocalHost.:8000", ("localhost", 8000)),
        ("[0:0:0:0:0:0:0:1]", ("[::1]", None)),
        ("[::ffff:127.0.0.1]:80", ("127.0.0.1", 80)),  # a dual-stack socket's IPv4 peer
        ("api.corp.example", ("api.corp.example", None)),
    ],
)
def test_host_names_are_compared_in_canonical_form(
    value: str, parsed: tuple[str, int | None]
) -> None:
    assert split_host(value) == parsed


@pytest.mark.parametrize(
    "value", ["", "local host", "::1", "[127.0.0.1]", "a..b", "x:0", "x:65536", "[::1]x"]
)
def test_malformed_host_names_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        split_host(value)


def test_a_malformed_host_is_400(client: httpx.Client) -> None:
    body = assert_problem(client.get("/health/live", headers={"Host": "local host:x"}), 400)
    assert body["code"] == "bad_host"


# -- Origin and Sec-Fetch-Site: cross-site requests ------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "http://localhost:3000", "http://127.0.0.1:{other}"],
    ids=["other-site", "null", "other-local-app", "other-port"],
)
def test_a_cross_site_post_is_refused_and_nothing_is_stored(
    server: LiveServer, client: httpx.Client, origin: str
) -> None:
    origin = origin.format(other=server.port + 1)
    title = f"cross-site from {origin}"
    body = assert_problem(post_conversation(client, title, Origin=origin), 403)
    assert body["code"] == "cross_site_request"
    assert "cors_origins" in body["detail"]
    chat = client.post("/v1/chat/completions", json=CHAT, headers={"Origin": origin})
    assert_problem(chat, 403)
    assert title not in titles(client)


def test_cross_site_deletes_and_patches_are_refused(client: httpx.Client) -> None:
    created = post_conversation(client, "target")
    assert created.status_code == 201, created.text
    path = f"/api/conversations/{created.json()['id']}"
    evil = {"Origin": "https://evil.example"}
    assert_problem(client.patch(path, json={"title": "defaced"}, headers=evil), 403)
    assert_problem(client.delete(path, headers=evil), 403)
    assert client.get(path).json()["title"] == "target"


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_sec_fetch_site_cross_site_without_origin_is_refused(
    client: httpx.Client, site: str
) -> None:
    title = f"fetch-site {site}"
    body = assert_problem(post_conversation(client, title, **{"Sec-Fetch-Site": site}), 403)
    assert site in body["detail"]
    assert title not in titles(client)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}"])
def test_a_same_origin_post_is_served(server: LiveServer, client: httpx.Client, host: str) -> None:
    host = host.format(port=server.port)
    headers = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    created = post_conversation(client, f"same-origin {host}", **headers)
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == "local"


def test_a_listed_cors_origin_may_post_and_read_the_answer(client: httpx.Client) -> None:
    headers = {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}
    created = post_conversation(client, "from the app", **headers)
    assert created.status_code == 201, created.text
    assert created.headers["access-control-allow-origin"] == "https://app.example"
    assert "from the app" in titles(client)


def test_a_cross_site_get_is_answered_without_cors_permission(client: httpx.Client) -> None:
    """Reads are not refused: without Access-Control-Allow-Origin the page cannot see them."""
    response = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


# -- Content-Type: bodies a page can send without a preflight --------------------------------


FORMS = {
    "text/plain": ("text/plain", JSON_BODY),
    "text/plain;charset=UTF-8": ("text/plain;charset=UTF-8", JSON_BODY),
    "form": ("application/x-www-form-urlencoded", b"title=from+a+form"),
    "multipart": ("multipart/form-data; boundary=x", b"--x\r\n\r\n{}\r\n--x--\r\n"),
    "none": (None, JSON_BODY),
}


@pytest.mark.parametrize("kind", FORMS)
@pytest.mark.parametrize("path", ["/api/conversations", "/v1/chat/completions"])
def test_a_body_that_is_not_json_is_415_naming_the_type(
    client: httpx.Client, kind: str, path: str
) -> None:
    content_type, content = FORMS[kind]
    if path.startswith("/v1/") and content is JSON_BODY:
        content = b'{"model": "offline/echo", "messages": [{"role": "user", "content": "x"}]}'
    headers = {"Content-Type": content_type} if content_type else {}
    before = titles(client)
    response = client.post(path, content=content, headers=headers)
    body = assert_problem(response, 415)
    assert body["code"] == "unsupported_media_type"
    assert "application/json" in body["detail"]
    assert response.headers["accept-post"] == "application/json"
    if path.startswith("/v1/"):
        assert body["error"]["type"] == "unsupported_media_type"
    assert titles(client) == before


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_bodies_are_served(client: httpx.Client, content_type: str) -> None:
    created = client.post(
        "/api/conversations", content=JSON_BODY, headers={"Content-Type": content_type}
    )
    assert created.status_code == 201, created.text


def test_a_json_patch_type_is_accepted(client: httpx.Client) -> None:
    created = post_conversation(client, "to patch")
    path = f"/api/conversations/{created.json()['id']}"
    patched = client.patch(
        path,
        content=b'{"title": "patched"}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "patched"
    refused = client.patch(path, content=b'{"title": "x"}', headers={"Content-Type": "text/plain"})
    assert assert_problem(refused, 415)
    assert refused.headers["accept-patch"] == "application/json"


# -- CORS preflight ----------------------------------------------------------------------------


def preflight(client: httpx.Client, origin: str) -> httpx.Response:
    return client.options(
        "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_a_preflight_from_a_listed_origin_is_allowed(client: httpx.Client) -> None:
    response = preflight(client, "https://app.example")
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.evil.example"])
def test_a_preflight_from_another_origin_is_refused(client: httpx.Client, origin: str) -> None:
    response = preflight(client, origin)
    body = assert_problem(response, 403)
    assert body["code"] == "cross_site_request"
    assert "access-control-allow-origin" not in response.headers


def test_cors_is_off_by_default(live_server: LiveServer, anon: httpx.Client) -> None:
    response = preflight(anon, "https://app.example")
    assert_problem(response, 403)
    assert "access-control-allow-origin" not in response.headers
    answer = anon.get("/health/live", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in answer.headers


# -- configuration --------------------------------------------------------------------------


def test_malformed_host_and_origin_settings_are_configuration_errors(tmp_path: Path) -> None:
    toml = '[server]\nallowed_hosts = ["http://x"]\ncors_origins = ["https://ok.example", "*"]\n'
    server = LiveServer(tmp_path, toml)
    for args in (["config", "check"], ["serve", "--port", str(server.port)]):
        done = server.hubbub(*args)
        assert done.returncode == 2, done.stderr
        assert "hubbub.toml:2: server.allowed_hosts: 'http://x' is not a host name" in done.stderr
        assert "hubbub.toml:3: server.cors_origins: '*' is not an origin" in done.stderr
        assert "Traceback" not in done.stderr


# -- clients that are not browsers ------------------------------------------------------------


def test_the_openai_client_and_plain_httpx_work_unchanged(server: LiveServer) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as sdk:
        reply = sdk.chat.completions.create(
            model="offline/echo", messages=[{"role": "user", "content": "Hello"}]
        )
        assert "Hello" in (reply.choices[0].message.content or "")
    with httpx.Client(base_url=server.url, trust_env=False) as plain:  # Host: 127.0.0.1:PORT
        assert plain.post("/api/conversations", json={"title": "httpx"}).status_code == 201
        assert plain.post("/v1/chat/completions", json=CHAT).status_code == 200


# -- two Authorization headers ----------------------------------------------------------------


def test_two_authorization_headers_are_400(live_server: LiveServer, alice_key: str) -> None:
    headers = [("Authorization", f"Bearer {alice_key}"), ("Authorization", "Bearer other")]
    with live_server.client() as client:
        for method, path in [("GET", "/v1/models"), ("GET", "/api/conversations")]:
            response = client.request(method, path, headers=headers)
            body = assert_problem(response, 400)
            assert body["code"] == "ambiguous_credentials"
            assert "Authorization" in body["detail"]
        # Either order: neither the first nor the last header wins.
        response = client.get("/v1/models", headers=list(reversed(headers)))
        assert_problem(response, 400)
        # One header still works.
        assert client.get("/v1/models", headers=headers[:1]).status_code == 200


# -- headers a browser never sends, but a proxy might ----------------------------------------


def raw_request(server: LiveServer, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (CRLF line ends added) and ``body`` as they are; the status and body."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("host", ["localhost:{port} ", "localhost:{port}\t", "localhost :{port}"])
def test_a_host_with_white_space_is_400_not_a_server_error(server: LiveServer, host: str) -> None:
    head = f"GET /api/tools HTTP/1.1\nHost: {host.format(port=server.port)}\nConnection: close\n"
    status, body = raw_request(server, head)
    assert status == 400, body
    assert json.loads(body)["code"] == "bad_host"
    assert "Traceback" not in server.log()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Origin: https://evil.example", "Origin: http://127.0.0.1:{port}"),
        ("Sec-Fetch-Site: cross-site", "Sec-Fetch-Site: same-origin"),
        ("Content-Type: text/plain", "Content-Type: application/json"),
    ],
    ids=["origin", "sec-fetch-site", "content-type"],
)
def test_a_repeated_browser_header_is_refused(
    server: LiveServer, client: httpx.Client, first: str, second: str
) -> None:
    title = f"repeated {first}"
    payload = json.dumps({"title": title}).encode()
    head = (
        f"POST /api/conversations HTTP/1.1\nHost: 127.0.0.1:{server.port}\n"
        f"{first}\n{second.format(port=server.port)}\n"
        f"Content-Length: {len(payload)}\nConnection: close\n"
    )
    if "Content-Type" not in first:
        head += "Content-Type: application/json\n"
    status, body = raw_request(server, head, payload)
    assert status == 400, body
    assert json.loads(body)["code"] == "repeated_header"
    assert title not in titles(client)


def test_an_http11_request_without_host_is_400(server: LiveServer) -> None:
    status, body = raw_request(server, "GET /api/tools HTTP/1.1\nConnection: close\n")
    assert status == 400, body
    assert json.loads(body)["detail"] == "an HTTP/1.1 request must send a Host header"
    status, _ = raw_request(server, "GET /health/live HTTP/1.0\n")  # HTTP/1.0 may omit it
    assert status == 200


def test_max_tokens_beyond_any_model_is_refused(client: httpx.Client) -> None:
    chat = {**CHAT, "max_tokens": 2**64}
    body = assert_problem(client.post("/v1/chat/completions", json=chat), 422)
    assert body["error"]["param"] == "max_tokens"
