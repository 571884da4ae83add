"""A real HTTP server that speaks the OpenAI API, written for hubbub's tests and benches.

An asyncio Protocol over httptools' request parser (uvloop when installed), answering from
pre-built bytes where it can, so it is fast enough to sit behind a benchmark. Run it in a thread
of the test process (:class:`OpenAIUpstream`, or the ``openai_upstream`` fixture) or as a
process (``python tests/openai_upstream.py PORT``).

What it serves (under any base path: ``/v1/chat/completions``, ``/openai/deployments/<model>/
chat/completions?api-version=...`` for Azure OpenAI):

* ``POST .../chat/completions``: a canned reply (:data:`REPLY`, one SSE event a word when
  ``"stream": true``; a last chunk with ``usage`` when ``stream_options.include_usage``).
  ``prompt_tokens`` is the number of words of the messages, ``completion_tokens`` the pieces of
  the reply. A model whose name contains ``tools`` asks for a tool when tools are offered:
  the one a last user message ``call <name> <json-arguments>`` names (with those arguments),
  else the first offered (with ``{}``); after a tool result it answers ``The tool answered:
  <result>``.
* ``POST .../embeddings``: one 8-dimensional vector per input, derived from its text
  (``encoding_format`` ``float`` or ``base64``).
* ``GET .../models``: the models asked for so far, and ``gpt-4o-mini``.

Faults, one per request: the next behaviour scripted for the request's model (else the next
scripted for any model), else the one its model name carries after ``@``
(``gpt-4o-mini@status:500``), else ``ok``:

* ``ok``: the canned answer;
* ``status:CODE`` and ``status:CODE:retry_after=S``: an OpenAI error body with that status
  (and a ``Retry-After`` header);
* ``context_overflow``: OpenAI's 400 with ``code: "context_length_exceeded"``;
* ``hang``: never answers, until the client leaves (the request records when it did);
* ``hang_after:N``: streams N events, then never another;
* ``drop_after:N``: streams N events (a whole reply: N bytes of its body) then closes the
  connection mid-response;
* ``slow:MS``: waits MS before answering, and between the events of a stream;
* ``garbage``: a 200 whose body is not JSON.

Control endpoints (also methods of :class:`OpenAIUpstream`): ``POST /_script`` with
``{"behaviours": [...], "model": optional}`` queues behaviours, consumed in order;
``GET /_requests`` lists every request seen (method, path, headers, body, connection, when it
arrived, its behaviour, when it was answered, when its client left before the end);
``GET /_connections`` lists connections (opened and closed times); ``POST /_reset`` forgets all.
Times are ``time.monotonic()``, which every process of the machine shares.

With ``api_key`` set, a request without ``Authorization: Bearer <key>`` (or Azure's
``api-key: <key>``) gets OpenAI's 401, whose message shows part of the key it was given, as
OpenAI's does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import httptools
import msgspec

REPLY = "Hello! I'm doing well, thank you for asking. How can I help you today?"
"""What every model answers (when it calls no tool)."""
CREATED = 1_700_000_000
EMBEDDING_DIMENSIONS = 8
STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
CONTEXT_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages"
        " resulted in 130017 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
_CALL = re.compile(r"^\s*call\s+(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<arguments>.*)$", re.S)
_json = msgspec.json.Encoder()


# -- behaviours ----------------------------------------------------------------------------


class Behaviour(msgspec.Struct, frozen=True):
    """One parsed behaviour (see the module's documentation)."""

    kind: str
    """``ok``, ``status``, ``context_overflow``, ``hang``, ``hang_after``, ``drop_after``,
    ``slow`` or ``garbage``."""
    text: str
    """As written."""
    status: int = 0
    retry_after: str | None = None
    count: int = 0
    ms: float = 0.0


def parse_behaviour(text: str) -> Behaviour:
    """The behaviour ``text`` names; ``ValueError`` for one this server does not know."""
    kind, _, rest = text.partition(":")
    try:
        if kind in ("ok", "hang", "context_overflow", "garbage") and not rest:
            return Behaviour(kind, text)
        if kind == "status":
            code, _, option = rest.partition(":")
            retry_after = None
            if option:
                name, _, value = option.partition("=")
                if name != "retry_after" or not value:
                    raise ValueError(option)
                retry_after = value
            return Behaviour(kind, text, status=int(code), retry_after=retry_after)
        if kind in ("hang_after", "drop_after"):
            return Behaviour(kind, text, count=int(rest))
        if kind == "slow":
            return Behaviour(kind, text, ms=float(rest))
    except ValueError:
        pass
    raise ValueError(f"unknown upstream behaviour {text!r}")


OK = Behaviour("ok", "ok")


# -- what the upstream reads ---------------------------------------------------------------


class _Function(msgspec.Struct):
    name: str = ""


class _Tool(msgspec.Struct):
    function: _Function | None = None


class _Message(msgspec.Struct):
    role: str = "user"
    content: str | list[Any] | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _Chat(msgspec.Struct):
    model: str = ""
    messages: list[_Message] = []
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = None


class _Embeddings(msgspec.Struct):
    model: str = ""
    input: str | list[str] = ""
    encoding_format: str = "float"


class _Script(msgspec.Struct):
    behaviours: list[str]
    model: str | None = None


_chat = msgspec.json.Decoder(_Chat)
_embeddings = msgspec.json.Decoder(_Embeddings)
_script = msgspec.json.Decoder(_Script)


def _text(content: str | list[Any] | None) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# -- records -------------------------------------------------------------------------------


class Recorded:
    """One request the upstream received."""

    def __init__(
        self, number: int, method: str, target: str, headers: dict[str, str], body: bytes, conn: int
    ) -> None:
        self.id = number
        """Its number, from 1, in arrival order."""
        self.method = method
        path, _, query = target.partition("?")
        self.path = path
        """The path, without the query."""
        self.query = query
        """The query string, without ``?``."""
        self.headers = headers
        """Its headers, names in lower case."""
        self.raw = body
        """Its body."""
        self.connection = conn
        """The number of the connection it came on (see :attr:`OpenAIUpstream.connections`)."""
        self.received_at = time.monotonic()
        """When it was complete (``time.monotonic()``)."""
        self.behaviour = "ok"
        """What the upstream did with it."""
        self.completed_at: float | None = None
        """When its whole response was written; ``None`` until then."""
        self.disconnected_at: float | None = None
        """When its client closed the connection before its response was whole."""

    @property
    def body(self) -> Any:
        """The body decoded from JSON (``None`` when empty, the text when it is not JSON)."""
        if not self.raw:
            return None
        try:
            return msgspec.json.decode(self.raw)
        except msgspec.DecodeError:
            return self.raw.decode("utf-8", "replace")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``GET /_requests`` lists)."""
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "connection": self.connection,
            "received_at": self.received_at,
            "behaviour": self.behaviour,
            "completed_at": self.completed_at,
            "disconnected_at": self.disconnected_at,
        }

    def __repr__(self) -> str:
        return f"<Recorded {self.id} {self.method} {self.path} {self.behaviour}>"


class ConnectionRecord:
    """One connection a client opened."""

    def __init__(self, number: int) -> None:
        self.id = number
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "opened_at": self.opened_at, "closed_at": self.closed_at}


# -- responses -----------------------------------------------------------------------------


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Status')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole response with a JSON body (keep-alive)."""
    body = _json.encode(payload)
    head = _head(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers],
    )
    return head + body


STREAM_HEAD = _head(
    200,
    [
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("Transfer-Encoding", "chunked"),
    ],
)


def http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(payload: Any) -> bytes:
    """One SSE event carrying ``payload`` as JSON (or ``[DONE]`` as is)."""
    data = payload if isinstance(payload, bytes) else _json.encode(payload)
    return b"data: " + data + b"\n\n"


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind = {429: "requests", 400: "invalid_request_error", 404: "invalid_request_error"}
    code = {429: "rate_limit_exceeded", 404: "model_not_found"}
    return {
        "error": {
            "message": message or f"The upstream answers {status} (scripted).",
            "type": kind.get(status, "server_error"),
            "param": None,
            "code": code.get(status),
        }
    }


def pieces(text: str) -> list[str]:
    """``text`` in streamed pieces: each word with the space before it."""
    return re.findall(r"\s*\S+", text)


class Answer:
    """What a chat request is answered with: text or one tool call, and usage."""

    def __init__(self, chat: _Chat) -> None:
        self.model = chat.model
        self.prompt_tokens = sum(len(_text(m.content).split()) for m in chat.messages)
        self.text = REPLY
        self.call: tuple[str, str, str] | None = None
        last = chat.messages[-1] if chat.messages else None
        if "tools" in chat.model and chat.tools and last is not None:
            if last.role == "tool":
                self.text = f"The tool answered: {_text(last.content)}"
            else:
                offered = [t.function.name for t in chat.tools if t.function is not None]
                match = _CALL.match(_text(last.content)) if last.role == "user" else None
                if match and match["name"] in offered:
                    self.call = (
                        f"call_{self.prompt_tokens}",
                        match["name"],
                        match["arguments"].strip() or "{}",
                    )
                elif offered:
                    self.call = (f"call_{self.prompt_tokens}", offered[0], "{}")
        self.parts = pieces(self.text) if self.call is None else []
        self.completion_tokens = len(self.parts) if self.call is None else 8

    @property
    def cacheable(self) -> bool:
        return self.call is None and self.text == REPLY

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if self.call is None:
            message["content"] = self.text
            finish = "stop"
        else:
            call_id, name, arguments = self.call
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ]
            finish = "tool_calls"
        return {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": self.usage(),
            "system_fingerprint": "fp_upstream",
        }

    def events(self, include_usage: bool) -> list[bytes]:
        """The SSE events of the streamed answer, ``[DONE]`` last."""
        base: dict[str, Any] = {
            "id": "chatcmpl-upstream",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": "fp_upstream",
        }
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**base, "choices": [choice]})

        events = [chunk({"role": "assistant", "content": ""})]
        if self.call is None:
            events.extend(chunk({"content": part}) for part in self.parts)
            events.append(chunk({}, "stop"))
        else:
            call_id, name, arguments = self.call
            first = {"index": 0, "id": call_id, "type": "function"}
            first["function"] = {"name": name, "arguments": ""}
            events.append(chunk({"tool_calls": [first]}))
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                events.append(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                )
            events.append(chunk({}, "tool_calls"))
        if include_usage:
            events.append(sse({**base, "choices": [], "usage": self.usage()}))
        events.append(sse(b"[DONE]"))
        return events


def embedding(text: str) -> list[float]:
    """The vector the upstream gives ``text``: derived from its SHA-256, in [-1, 1)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(b - 128) / 128 for b in digest[:EMBEDDING_DIMENSIONS]]


# -- the server ----------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: OpenAIUpstream) -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.record = ConnectionRecord(upstream._next_connection())
        self.pending: list[Recorded] = []
        self.tasks: set[asyncio.Task[None]] = set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.upstream._opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        now = time.monotonic()
        self.record.closed_at = now
        for recorded in self.pending:
            recorded.disconnected_at = now
        self.pending.clear()
        for task in self.tasks:
            task.cancel()
        self.upstream._closed(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(json_response(400, error_body(400, "malformed request")))
            self.transport.close()

    # httptools
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body.clear()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        headers: dict[str, str] = {}
        for name, value in self.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.upstream._handle(self, method, self.url.decode("latin-1"), headers, bytes(self.body))

    # helpers for the upstream
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def finish(self, recorded: Recorded | None) -> None:
        if recorded is not None:
            recorded.completed_at = time.monotonic()
            with contextlib.suppress(ValueError):
                self.pending.remove(recorded)
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class OpenAIUpstream:
    """The upstream, serving from a thread with its own event loop.

    :param host: where to listen.
    :param port: the port (0: one the OS chooses; see :attr:`port`).
    :param api_key: when set, requests must carry it (else OpenAI's 401).
    :param record_limit: requests and connections remembered (the oldest are forgotten).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        record_limit: int = 10_000,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self._lock = threading.Lock()
        self._requests: deque[Recorded] = deque(maxlen=record_limit)
        self._connections: deque[ConnectionRecord] = deque(maxlen=record_limit)
        self._open: set[_Connection] = set()
        self._scripts: dict[str | None, deque[Behaviour]] = {}
        self._count = 0
        self._connection_count = 0
        self._models: dict[str, None] = {"gpt-4o-mini": None}
        self._cache: dict[tuple[str, bool, bool, int], bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # -- life ------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL: ``http://host:port/v1``."""
        return f"{self.origin}/v1"

    def start(self) -> OpenAIUpstream:
        """Start serving in a thread; return when it listens."""
        self._thread = threading.Thread(target=self._run, name="openai-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the OpenAI upstream did not start in 10 s")
        if self._failure is not None:
            raise RuntimeError(f"the OpenAI upstream failed to start: {self._failure}")
        return self

    def stop(self) -> None:
        """Close every connection and stop serving."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already stopped
            loop.call_soon_threadsafe(self._shutdown)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> OpenAIUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is installed with uvicorn[standard]
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(self._listen())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=1024, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _shutdown(self) -> None:
        assert self._loop is not None
        if self._server is not None:
            self._server.close()
        for connection in list(self._open):
            if connection.transport is not None:
                connection.transport.abort()
        self._loop.call_later(0.05, self._loop.stop)

    # -- what tests ask --------------------------------------------------------------------

    def script(self, *behaviours: str, model: str | None = None) -> None:
        """Queue ``behaviours`` for the next requests (of ``model`` only, when given)."""
        parsed = [parse_behaviour(b) for b in behaviours]
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(parsed)

    @property
    def requests(self) -> list[Recorded]:
        """Every request seen (the control endpoints' excepted), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> list[ConnectionRecord]:
        """Every connection opened, oldest first."""
        with self._lock:
            return list(self._connections)

    def chat_requests(self) -> list[Recorded]:
        """The ``POST .../chat/completions`` requests seen."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def reset(self) -> None:
        """Forget requests, connections and scripts."""
        with self._lock:
            self._requests.clear()
            self._connections.clear()
            self._scripts.clear()

    def wait_until(self, condition: Callable[[], object], timeout: float = 10.0) -> None:
        """Poll ``condition`` until it holds (``AssertionError`` after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout} s: {self.requests}")
            time.sleep(0.01)

    async def await_until(self, condition: Callable[[], object], within: float = 10.0) -> None:
        """:meth:`wait_until` for async tests (the event loop keeps running)."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {within} s: {self.requests}")
            await asyncio.sleep(0.01)

    # -- serving (on the upstream's loop) --------------------------------------------------

    def _next_connection(self) -> int:
        self._connection_count += 1
        return self._connection_count

    def _opened(self, connection: _Connection) -> None:
        self._open.add(connection)
        with self._lock:
            self._connections.append(connection.record)

    def _closed(self, connection: _Connection) -> None:
        self._open.discard(connection)

    def _next_behaviour(self, model: str) -> Behaviour:
        with self._lock:
            for key in (model, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        _, at, named = model.partition("@")
        return parse_behaviour(named) if at else OK

    def _handle(
        self, conn: _Connection, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> None:
        path = target.partition("?")[0]
        if path.startswith("/_"):
            conn.write(self._control(method, path, body))
            conn.finish(None)
            return
        self._count += 1
        recorded = Recorded(self._count, method, target, headers, body, conn.record.id)
        with self._lock:
            self._requests.append(recorded)
        conn.pending.append(recorded)
        refusal = self._refusal(headers)
        if refusal is not None:
            recorded.behaviour = "unauthorized"
            conn.write(refusal)
            conn.finish(recorded)
        elif method == "POST" and path.endswith("/chat/completions"):
            self._chat(conn, recorded, path, body)
        elif method == "POST" and path.endswith("/embeddings"):
            self._embed(conn, recorded, body)
        elif method == "GET" and path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "upstream"}
                for m in self._models
            ]
            conn.write(json_response(200, {"object": "list", "data": data}))
            conn.finish(recorded)
        else:
            conn.write(json_response(404, error_body(404, f"no route {method} {path}")))
            conn.finish(recorded)

    def _refusal(self, headers: dict[str, str]) -> bytes | None:
        if self.api_key is None:
            return None
        given = headers.get("api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if given == self.api_key:
            return None
        shown = f"{given[:3]}***{given[-2:]}" if len(given) > 6 else "***"
        body = error_body(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at"
            " https://platform.openai.com/account/api-keys.",
        )
        body["error"].update(type="invalid_request_error", code="invalid_api_key")
        return json_response(401, body)

    def _control(self, method: str, path: str, body: bytes) -> bytes:
        if method == "GET" and path == "/_requests":
            return json_response(200, [r.as_dict() for r in self.requests])
        if method == "GET" and path == "/_connections":
            return json_response(200, [c.as_dict() for c in self.connections])
        if method == "POST" and path == "/_reset":
            self.reset()
            return json_response(200, {"reset": True})
        if method == "POST" and path == "/_script":
            try:
                script = _script.decode(body)
                self.script(*script.behaviours, model=script.model)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                return json_response(400, error_body(400, str(exc)))
            return json_response(200, {"queued": len(script.behaviours)})
        return json_response(404, error_body(404, f"no control endpoint {method} {path}"))

    def _fault(self, conn: _Connection, recorded: Recorded, behaviour: Behaviour) -> bool:
        """Answer with ``behaviour`` when it is one that needs no reply; whether it did."""
        kind = behaviour.kind
        if kind == "hang":
            return True  # never answered: connection_lost records when the client left
        if kind == "status":
            headers = []
            if behaviour.retry_after is not None:
                headers.append(("Retry-After", behaviour.retry_after))
            conn.write(json_response(behaviour.status, error_body(behaviour.status), headers))
        elif kind == "context_overflow":
            conn.write(json_response(400, CONTEXT_OVERFLOW))
        elif kind == "garbage":
            body = b"<html>not an OpenAI answer</html>"
            head = _head(200, [("Content-Type", "text/html"), ("Content-Length", str(len(body)))])
            conn.write(head + body)
        else:
            return False
        conn.finish(recorded)
        return True

    def _chat(self, conn: _Connection, recorded: Recorded, path: str, body: bytes) -> None:
        try:
            chat = _chat.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            conn.write(json_response(400, error_body(400, f"invalid body: {exc}")))
            conn.finish(recorded)
            return
        if not chat.model and "/deployments/" in path:  # Azure: the deployment names it
            chat.model = path.split("/deployments/", 1)[1].split("/", 1)[0]
        self._models.setdefault(chat.model.partition("@")[0], None)
        try:
            behaviour = self._next_behaviour(chat.model)
        except ValueError as exc:
            conn.write(json_response(400, error_body(400, str(exc))))
            conn.finish(recorded)
            return
        recorded.behaviour = behaviour.text
        if self._fault(conn, recorded, behaviour):
            return
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        answer = Answer(chat)
        if behaviour.kind == "ok":
            key = (chat.model, chat.stream, include_usage, answer.prompt_tokens)
            whole = self._cache.get(key) if answer.cacheable else None
            if whole is None:
                whole = self._render(answer, chat.stream, include_usage)
                if answer.cacheable:
                    if len(self._cache) > 1000:
                        self._cache.clear()
                    self._cache[key] = whole
            conn.write(whole)
            conn.finish(recorded)
            return
        conn.spawn(self._paced(conn, recorded, behaviour, answer, chat.stream, include_usage))

    def _render(self, answer: Answer, stream: bool, include_usage: bool) -> bytes:
        if not stream:
            return json_response(200, answer.completion())
        events = answer.events(include_usage)
        return STREAM_HEAD + b"".join(http_chunk(e) for e in events) + b"0\r\n\r\n"

    async def _paced(
        self,
        conn: _Connection,
        recorded: Recorded,
        behaviour: Behaviour,
        answer: Answer,
        stream: bool,
        include_usage: bool,
    ) -> None:
        """The behaviours that take time: ``slow``, ``hang_after``, ``drop_after``."""
        delay = behaviour.ms / 1000
        if not stream:
            whole = self._render(answer, False, include_usage)
            if behaviour.kind == "slow":
                await asyncio.sleep(delay)
                conn.write(whole)
                conn.finish(recorded)
            elif behaviour.kind == "drop_after":
                head_end = whole.index(b"\r\n\r\n") + 4
                conn.write(whole[: head_end + behaviour.count])
                await asyncio.sleep(0.01)
                assert conn.transport is not None
                conn.transport.close()
            else:  # hang_after: the head and N bytes, then nothing
                head_end = whole.index(b"\r\n\r\n") + 4
                conn.write(whole[: head_end + behaviour.count])
            return
        events = answer.events(include_usage)
        if behaviour.kind == "slow":
            await asyncio.sleep(delay)
        conn.write(STREAM_HEAD)
        for number, event in enumerate(events):
            if behaviour.kind in ("hang_after", "drop_after") and number == behaviour.count:
                if behaviour.kind == "drop_after":
                    await asyncio.sleep(0.01)  # let what was written leave first
                    assert conn.transport is not None
                    conn.transport.close()
                return  # hang_after: wait for the client to leave (connection_lost)
            if behaviour.kind == "slow" and number:
                await asyncio.sleep(delay)
            conn.write(http_chunk(event))
        conn.write(b"0\r\n\r\n")
        conn.finish(recorded)

    def _embed(self, conn: _Connection, recorded: Recorded, body: bytes) -> None:
        try:
            request = _embeddings.decode(body)
            behaviour = self._next_behaviour(request.model)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            conn.write(json_response(400, error_body(400, f"invalid body: {exc}")))
            conn.finish(recorded)
            return
        recorded.behaviour = behaviour.text
        if self._fault(conn, recorded, behaviour):
            return
        inputs = [request.input] if isinstance(request.input, str) else request.input
        data = []
        for index, text in enumerate(inputs):
            vector: Any = embedding(text)
            if request.encoding_format == "base64":
                packed = struct.pack(f"<{len(vector)}f", *vector)
                vector = base64.b64encode(packed).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(t.split()) for t in inputs)
        payload = {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        conn.write(json_response(200, payload))
        conn.finish(recorded)


def main() -> None:
    """``python tests/openai_upstream.py PORT [--api-key KEY]``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", default=None)
    options = parser.parse_args()
    upstream = OpenAIUpstream(options.host, options.port, api_key=options.api_key).start()
    print(f"UPSTREAM ready on {upstream.port}", flush=True)  # noqa: T201 - the bench reads it
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        upstream.stop()


if __name__ == "__main__":
    main()
