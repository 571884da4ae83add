"""The gateway benchmark's baseline: a bare Litestar handler forwarding to the upstream with
aiohttp (issue 19's "bare forwarder", the ceiling for a Python gateway on this machine).

``POST /v1/chat/completions`` decodes the body into a msgspec struct (as any gateway must, to
see the model and ``stream``), sends the raw bytes on to ``$UPSTREAM_URL`` (for example
``http://127.0.0.1:8001/v1``) through one ``aiohttp.ClientSession`` with the settings a careful
user picks (no connection limit, keep-alive, no decompression, no cookies, no proxy lookup), and
returns the upstream's body; a stream is split into SSE events (``\\n\\n``) and each event is
sent on as it completes. No authentication, no accounting, no error handling beyond the
status: what is left is the floor of Litestar + aiohttp.

    UPSTREAM_URL=http://127.0.0.1:8001/v1 uvicorn _forwarder:app --loop uvloop \\
        --http httptools --no-access-log --port 8101
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8001/v1").rstrip("/")
URL = f"{UPSTREAM}/chat/completions"
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}


class Message(msgspec.Struct):
    """A chat message, as far as the forwarder looks."""

    role: str
    content: str | None = None


class ChatBody(msgspec.Struct):
    """The fields a gateway must read to route a request."""

    model: str
    messages: list[Message]
    stream: bool = False


decode = msgspec.json.Decoder(ChatBody).decode
session: list[aiohttp.ClientSession] = []


async def startup() -> None:
    """Open the client session (on the server's event loop)."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None)
    session.append(
        aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60),
        )
    )


async def shutdown() -> None:
    """Close the client session."""
    for opened in session:
        await opened.close()


async def events(raw: bytes) -> AsyncIterator[bytes]:
    """The upstream's SSE stream, one complete event at a time."""
    async with session[0].post(URL, data=raw, headers=HEADERS) as reply:
        pending = b""
        async for data in reply.content.iter_any():
            pending = pending + data if pending else data
            start = 0
            while (end := pending.find(b"\n\n", start)) >= 0:
                yield pending[start : end + 2]
                start = end + 2
            pending = pending[start:]
        if pending:
            yield pending


@post("/v1/chat/completions", status_code=200)
async def chat(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    """Forward one chat request."""
    raw = await request.body()
    if decode(raw).stream:
        return Stream(events(raw), media_type="text/event-stream")
    async with session[0].post(URL, data=raw, headers=HEADERS) as reply:
        body = await reply.read()
        status = reply.status
    return Response(content=body, media_type="application/json", status_code=status)


@get("/health/ready")
async def ready() -> dict[str, str]:
    """Readiness, as the benchmarks wait for it."""
    return {"status": "ok"}


app = Litestar([chat, ready], on_startup=[startup], on_shutdown=[shutdown])
