"""A canned OpenAI-compatible upstream for the benchmarks, as fast as a Python server gets:
uvloop, an asyncio Protocol, httptools' request parser, responses built once and written with
one ``transport.write``. It answers in well under a tenth of a millisecond, so what a benchmark
measures in front of it is the gateway, not the upstream.

* ``POST /v1/chat/completions``: a fixed ``chat.completion`` (``Content-Length``, keep-alive);
  with ``"stream": true`` in the body, a fixed SSE stream of ``--chunks`` events (chunked
  transfer encoding, one HTTP chunk per SSE event, as OpenAI and vLLM send them), plus a usage
  chunk when the body asks for ``"include_usage": true``, ending with ``data: [DONE]``.
* ``GET /v1/models``: one model, ``gpt-4o-mini``.
* anything else: 404 with an OpenAI-style error body.

The body is not decoded (a byte search finds ``"stream":true``): the benchmarks send the same
request all the time. Nothing is logged per request.

    .venv/bin/python bench/_upstream.py PORT [--chunks 20]

It prints ``UPSTREAM ready on PORT`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import cast

import httptools
import uvloop

MODEL = "gpt-4o-mini-2024-07-18"
USAGE = {"prompt_tokens": 13, "completion_tokens": 18, "total_tokens": 31}


def completion() -> bytes:
    """The canned ``chat.completion`` body."""
    return json.dumps(
        {
            "id": "chatcmpl-canned0123456789",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hello! I'm doing well, thank you for asking. "
                        "How can I help you today?",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
            "system_fingerprint": "fp_canned",
        },
        separators=(",", ":"),
    ).encode()


def sse_events(count: int, usage: bool) -> list[bytes]:
    """``count`` SSE events of a streamed reply, ``[DONE]`` included (and, before it, OpenAI's
    usage chunk with no choices when ``usage``)."""
    base = {
        "id": "chatcmpl-canned0123456789",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "system_fingerprint": "fp_canned",
    }
    deltas = max(2, count - 1)
    events = []
    for i in range(deltas):
        if i == 0:
            delta: dict[str, str] = {"role": "assistant", "content": ""}
            finish = None
        elif i == deltas - 1:
            delta, finish = {}, "stop"
        else:
            delta, finish = {"content": f"tok{i} "}, None
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        events.append(dict(base, choices=[choice]))
    if usage:
        events.append(dict(base, choices=[], usage=USAGE))
    encoded = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    return [*encoded, b"data: [DONE]\n\n"]


def http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def json_response(status: int, reason: bytes, body: bytes) -> bytes:
    """A whole HTTP/1.1 response with a JSON body."""
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % (status, reason, len(body)) + body


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class Responses:
    """Every response the upstream sends, built once."""

    def __init__(self, chunks: int) -> None:
        self.completion = json_response(200, b"OK", completion())
        self.stream = self._stream(sse_events(chunks, usage=False))
        self.stream_usage = self._stream(sse_events(chunks, usage=True))
        models = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}
        self.models = json_response(200, b"OK", json.dumps(models).encode())
        missing = {"error": {"message": "not found", "type": "invalid_request_error"}}
        self.missing = json_response(404, b"Not Found", json.dumps(missing).encode())

    @staticmethod
    def _stream(events: list[bytes]) -> bytes:
        return STREAM_HEAD + b"".join(http_chunk(e) for e in events) + b"0\r\n\r\n"


class Upstream(asyncio.Protocol):
    """One client connection: parse requests, write the canned response of each."""

    def __init__(self, responses: Responses) -> None:
        self.responses = responses
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body.clear()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        transport, responses, body = self.transport, self.responses, self.body
        assert transport is not None
        method = self.parser.get_method()
        if method == b"POST" and self.url.endswith(b"/chat/completions"):
            if b'"stream":true' in body or b'"stream": true' in body:
                usage = b'"include_usage":true' in body or b'"include_usage": true' in body
                transport.write(responses.stream_usage if usage else responses.stream)
            else:
                transport.write(responses.completion)
        elif method == b"GET" and self.url.endswith(b"/models"):
            transport.write(responses.models)
        else:
            transport.write(responses.missing)
        if not self.parser.should_keep_alive():
            transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--chunks", type=int, default=20, help="SSE events of a stream")
    args = parser.parse_args()
    responses = Responses(args.chunks)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Upstream(responses), args.host, args.port, backlog=1024, reuse_address=True
        )
        print(f"UPSTREAM ready on {args.port}", flush=True)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
