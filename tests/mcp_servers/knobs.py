"""An MCP server for the tests, with knobs: it can crash, hang and change its tool list.

Run ``python -m tests.mcp_servers.knobs stdio`` or ``python -m tests.mcp_servers.knobs http
--port N`` (streamable HTTP at ``/mcp``; with ``--token T`` every request needs
``Authorization: Bearer T``, anything else is answered 401).

Tools: ``echo`` (text), ``add`` (structured output), ``pid``, ``env`` (the environment it
sees, as JSON), ``crash`` (exits the process mid-call), ``hang`` (never answers),
``slow`` (answers after ``seconds``), ``fail`` (an ``isError`` result), ``image`` (an image
block and a text block), ``grow`` (adds a tool ``extra`` and sends ``tools/list_changed``),
``weird name!`` (a name hubbub must sanitise), ``crowd`` (adds many tools, a long description,
a huge schema), ``chatter`` (sends ``list_changed`` again and again), ``big`` (a huge result),
``noise`` (writes lines that are not JSON to stdout).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any
from urllib.parse import parse_qs

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ImageContent, TextContent
from pydantic import BaseModel

server = MCPServer("knobs")


class Sum(BaseModel):
    """The result of ``add``."""

    total: int


@server.tool()
def echo(text: str) -> str:
    """Return the text as it came."""
    return text


@server.tool()
def add(a: int, b: int) -> Sum:
    """Add two integers."""
    return Sum(total=a + b)


@server.tool()
def pid() -> str:
    """This server's process id."""
    return str(os.getpid())


@server.tool()
def env() -> str:
    """The environment this server runs with, as a JSON object."""
    return json.dumps(dict(os.environ))


@server.tool()
async def crash() -> str:
    """Exit the process in the middle of the call."""
    await anyio.sleep(0.05)
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never answer."""
    await anyio.sleep_forever()
    return "unreachable"


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after ``seconds``."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def shout(lines: int, width: int = 10) -> str:
    """Write ``lines`` lines of ``width`` characters to stderr."""
    for number in range(lines):
        sys.stderr.write(f"{number:05d}".ljust(width, "!") + "\n")
    sys.stderr.flush()
    return "shouted"


@server.tool()
def fail() -> list[TextContent]:
    """Raise: the result is an error."""
    raise ToolError("the knob says no")


@server.tool()
def image() -> list[TextContent | ImageContent]:
    """An image block and a text block."""
    return [
        TextContent(type="text", text="a picture:"),
        ImageContent(type="image", data="aGVsbG8=", mime_type="image/png"),
    ]


@server.tool()
async def grow(ctx: Context) -> str:
    """Add a tool named ``extra`` and tell the client the tool list changed."""

    def extra() -> str:
        """A tool added while running."""
        return "extra here"

    server.add_tool(extra, name="extra")
    await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool()
async def crowd(ctx: Context, count: int, description_chars: int = 0, schema_bytes: int = 0) -> str:
    """Add ``count`` tools (``crowd_0000``...), one ``wordy`` whose description has
    ``description_chars`` characters (when more than 0) and one ``bulky`` whose input schema is
    about ``schema_bytes`` bytes of JSON (when more than 0); tell the client."""

    def member() -> str:
        """One of a crowd."""
        return "here"

    for number in range(count):
        server.add_tool(member, name=f"crowd_{number:04d}")
    if description_chars:
        server.add_tool(member, name="wordy", description="w" * description_chars)
    if schema_bytes:
        bulky = server._tool_manager.add_tool(member, name="bulky")
        huge = {"type": "object", "description": "b" * schema_bytes}
        server._tool_manager._tools["bulky"] = bulky.model_copy(update={"parameters": huge})
    await ctx.session.send_tool_list_changed()
    return "crowded"


@server.tool()
async def chatter(ctx: Context, times: int, pause: float = 0.0) -> str:
    """Send ``tools/list_changed`` ``times`` times, ``pause`` seconds apart (the list does not
    change)."""
    for _ in range(times):
        await ctx.session.send_tool_list_changed()
        await anyio.sleep(pause)
    return "chattered"


@server.tool()
def big(size: int) -> str:
    """A text of ``size`` characters."""
    return "x" * size


@server.tool()
def noise(lines: int) -> str:
    """Write ``lines`` lines that are not JSON to stdout (stdio only), then answer."""
    # (to the pipe the messages go through: the server moves them off fd 1)
    os.write(_WIRE[0], "".join(f"not json {number}\n" for number in range(lines)).encode())
    return "noisy"


_WIRE = [1]
"""A copy of the process's stdout, taken before the stdio server diverts fd 1."""


def _weird() -> str:
    """A tool whose name has characters hubbub does not allow."""
    return "weird"


server.add_tool(_weird, name="weird name!")


class _Tokens:
    """The token endpoint's state: tokens it issued and still honours."""

    issued = 0
    valid: set[str] = set()


@server.tool()
def tokens_issued() -> int:
    """How many tokens the token endpoint issued."""
    return _Tokens.issued


@server.tool()
def revoke_tokens() -> str:
    """Forget every token issued: the next request carrying one gets a 401."""
    _Tokens.valid.clear()
    return "revoked"


def _guard(app: Any, token: str | None, client_secret: str | None, ttl: int) -> Any:
    """``app`` behind bearer tokens: the static ``token``, or those issued at ``/token`` to
    the client ``hubbub`` with ``client_secret`` (client credentials grant)."""

    async def respond(send: Any, status: int, body: bytes, kind: bytes) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]}
        )
        await send({"type": "http.response.body", "body": body})

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"] == "/token":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            client_id, secret = form.get("client_id"), form.get("client_secret")
            basic = headers.get(b"authorization", b"")
            if basic.startswith(b"Basic "):
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            if (
                form.get("grant_type") != "client_credentials"
                or client_id != "hubbub"
                or secret != client_secret
            ):
                await respond(send, 401, b'{"error": "invalid_client"}', b"application/json")
                return
            _Tokens.issued += 1
            issued = f"tok-{_Tokens.issued}"
            _Tokens.valid.add(issued)
            answer = {"access_token": issued, "token_type": "Bearer", "expires_in": ttl}
            await respond(send, 200, json.dumps(answer).encode(), b"application/json")
            return
        bearer = headers.get(b"authorization", b"").decode()
        presented = bearer[7:] if bearer.startswith("Bearer ") else None
        if presented is None or (presented != token and presented not in _Tokens.valid):
            await respond(send, 401, b"unauthorized", b"text/plain")
            return
        await app(scope, receive, send)

    return guarded


_SEEN: set[str] = set()


@server.tool()
def seen_authorization() -> str:
    """Every distinct ``Authorization`` header this server's MCP endpoint received, sorted, as
    a JSON list."""
    return json.dumps(sorted(_SEEN))


def _recorder(app: Any) -> Any:
    """``app``, noting each request's ``Authorization`` header."""

    async def recorded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/token":
            value = dict(scope["headers"]).get(b"authorization")
            if value is not None:
                _SEEN.add(value.decode())
        await app(scope, receive, send)

    return recorded


def _http(
    port: int, token: str | None, client_secret: str | None, ttl: int, json_response: bool
) -> None:
    import uvicorn

    app: Any = server.streamable_http_app(json_response=json_response)
    if token is not None or client_secret is not None:
        app = _guard(app, token, client_secret, ttl)
    app = _recorder(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", help="a bearer token every request must carry")
    parser.add_argument("--client-secret", help="serve /token for the client 'hubbub'")
    parser.add_argument("--token-ttl", type=int, default=3600)
    parser.add_argument("--json", action="store_true", help="answer with JSON, not SSE")
    parser.add_argument("--tag", help="ignored: lets a test find its processes")
    options = parser.parse_args()
    sys.stderr.write("knobs server starting\n")
    sys.stderr.flush()
    if options.transport == "stdio":
        _WIRE[0] = os.dup(1)
        server.run("stdio")
    else:
        _http(options.port, options.token, options.client_secret, options.token_ttl, options.json)


if __name__ == "__main__":
    main()
