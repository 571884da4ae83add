"""``web.fetch`` and the mock tools through ``hubbub serve`` over real HTTP: listed by
``GET /api/tools``, called by a conversation's tool loop, a local server refused (loopback)
with the model-facing error stored and the conversation going on, then reached once the
operator allows its network."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from live_support import running


class _Page(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Page.hits.append(self.path)
        body = b"<html><title>Local page</title><p>served locally</p></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def page_server() -> Iterator[ThreadingHTTPServer]:
    _Page.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def tool_reply(client: object, cid: str, name: str, arguments: dict[str, object]) -> dict:
    sent = client.post(  # type: ignore[attr-defined]
        f"/api/conversations/{cid}/messages",
        json={"content": f"call {name} {json.dumps(arguments)}", "wait": True},
    )
    assert sent.status_code in (200, 201), sent.text
    return sent.json()


def test_fetch_refused_then_allowed_over_http(
    tmp_path: Path, page_server: ThreadingHTTPServer
) -> None:
    port = page_server.server_address[1]
    url = f"http://127.0.0.1:{port}/page"
    base = f"[tools]\nmock = true\n[plugins.web_tools]\nallow_ports = [{port}]\n"
    with (
        running(tmp_path / "refusing", base, keys=("alice",)) as server,
        server.client(server.keys["alice"][1]) as alice,
    ):
        names = [t["name"] for t in alice.get("/api/tools").json()["tools"]]
        assert "web.fetch" in names
        assert {"mock.weather", "mock.search"} <= set(names)
        cid = alice.post("/api/conversations", json={"model": "offline/tools"}).json()["id"]
        tool_reply(alice, cid, "web.fetch", {"url": url})
        messages = alice.get(f"/api/conversations/{cid}/messages").json()["items"]
        tools = [m["content"] for m in messages if m["role"] == "tool"]
        assert tools == ["error: refused: 127.0.0.1 is a loopback address"]
        assert messages[-1]["role"] == "assistant"  # the conversation went on
        assert "loopback" in messages[-1]["content"]
    assert _Page.hits == []

    allowing = base + 'allow_networks = ["127.0.0.1/32"]\n'
    with (
        running(tmp_path / "allowing", allowing, keys=("alice",)) as server,
        server.client(server.keys["alice"][1]) as alice,
    ):
        cid = alice.post("/api/conversations", json={"model": "offline/tools"}).json()["id"]
        tool_reply(alice, cid, "web.fetch", {"url": url})
        messages = alice.get(f"/api/conversations/{cid}/messages").json()["items"]
        (result,) = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
        assert (result["title"], result["text"]) == ("Local page", "served locally")
        assert "served locally" in messages[-1]["content"]
    assert _Page.hits == ["/page"]
