"""Issue 20's tools benchmark: what a tool call costs through hubbub, in process, against calling
the tool directly; an MCP round trip over stdio and streamable HTTP through hubbub, against the
``mcp`` package's own client.

Every figure is the time of one call, calls one after another (never two at once), in runtimes
built with ``hubbub.testing`` from the default configuration (SQLite memory store, the ``log``
event sink; logging below WARNING off). Groups, each against its own baseline (the first row):

* **local tool call**: ``basic.calculator`` with ``{"expression": "2 * (3 + 4)"}``:

  - ``direct function call``: ``await calculator("2 * (3 + 4)")``, the plugin's own function
    (the baseline);
  - ``registry, no middleware``: ``runtime.tools.for_caller(principal).call(ToolCall(...),
    ToolContext(...))``: the caller's tool set, permission check, JSON decoding, validation
    (msgspec), the concurrency slot and the timeout, the result stamped;
  - ``registry, 1 pass-through middleware``: the same in a runtime where a plugin registers one
    tool middleware that only passes the call on;
  - ``+ events, no storage``: that, plus the ``status``, ``tool.started`` and
    ``tool.finished`` events published on the bus (the tool set built for the caller in a
    conversation, as a reply builds it);
  - ``conversation path``: what the conversation engine does around one call
    (``ReplyWriter._run_tool`` in ``hubbub/conversation/writer.py``): the registry call with
    that middleware, the ``status``, ``tool.started``, ``tool.finished`` and
    ``message.created`` events published on the bus, and the ``tool`` message appended to the
    conversation in the SQLite memory store.

* **reply**: a whole reply through ``ConversationEngine.post_message(..., wait=True)`` in a new
  conversation each time (created through the engine, quotas off): ``offline/echo`` answering
  ``what is 2 * (3 + 4)?`` (the baseline) against ``offline/tools`` asked ``call
  basic.calculator {"expression": "2 * (3 + 4)"}``: the added time is one tool call as a
  conversation makes it, with its second model round and the two more stored messages.

* **MCP round trip**: the ``echo`` tool of bench/_mcp_server.py (the ``mcp`` package's own
  server, answering at once) over stdio (a child process) and over streamable HTTP (a child
  process under uvicorn on a free loopback port):

  - ``mcp ClientSession``: the ``mcp`` package's client, ``session.call_tool("echo", ...)``
    on a session of its own (the baseline);
  - ``hubbub McpTool.call``: the tool object hubbub's MCP provider offers (its session, the
    result turned into a ``ToolResult``), called directly;
  - ``hubbub registry``: ``for_caller(principal).call(...)`` of ``<server>.echo``: the same
    plus the registry (validation against the tool's JSON Schema with jsonschema...).

  and one more pair for the published ``mcp-server-time`` over stdio
  (``get_current_time {"timezone": "UTC"}``): its ``ClientSession`` against hubbub's registry.

Rounds alternate every row (the order rotates each round); each figure is the median over the
rounds of the mean time per call. Client, MCP servers and other work share this 2-core machine:
read the ratios, measured in the same run.

    .venv/bin/python bench/tools.py [--rounds 9] [--seconds 0.3] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
SERVER = HERE / "_mcp_server.py"
TIME_SERVER = Path(sys.executable).with_name("mcp-server-time")
ALONE = f"one thread of this {os.cpu_count()}-core machine, shared with other work"
SHARED = f"{os.cpu_count()}-core machine: the client and the MCP servers share it"
EXPRESSION = "2 * (3 + 4)"
ANSWER = "14"
ECHOED = "hello, bench"
QUIET_CONFIG = """
[quotas]
max_conversations = 0
conversations_per_minute = 0
max_stored_bytes = 0
"""

GROUPS = {
    "local": f'local tool call, basic.calculator "{EXPRESSION}" (one call at a time; {ALONE})',
    "reply": (
        "one reply, new conversation each (ConversationEngine.post_message wait=True, one "
        f"pass-through tool middleware; {ALONE})"
    ),
    "stdio": f"MCP round trip over stdio, tool echo of bench/_mcp_server.py ({SHARED})",
    "http": f"MCP round trip over streamable HTTP, same server under uvicorn ({SHARED})",
    "time": f"mcp-server-time over stdio, get_current_time UTC ({SHARED})",
}
"""Each group's heading; its first row is its baseline."""


@dataclass
class Row:
    """One way of making a call, and the time per call of each round."""

    group: str
    name: str
    call: Callable[[], Awaitable[Any]] | None
    unavailable: str = ""
    per_call_ms: list[float] = field(default_factory=list)


def free_port() -> int:
    """A loopback TCP port nobody listens on now (from the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def checked(name: str, call: Callable[[], Awaitable[Any]], expected: str) -> None:
    """Call once and check the answer holds ``expected``: a broken setup raises."""
    result = await call()
    content = getattr(result, "content", result)
    if isinstance(content, list):  # an MCP result's blocks
        content = " ".join(getattr(block, "text", "") for block in content)
    if getattr(result, "is_error", False) or expected not in str(content):
        raise RuntimeError(f"{name}: unexpected answer {result!r}")


# -- local tool calls ------------------------------------------------------------------------


def middleware_plugin() -> object:
    """A plugin registering one tool middleware that passes every call on unchanged."""
    from hubbub import hookimpl
    from hubbub.middleware import ToolMiddlewareBase

    class PassThrough(ToolMiddlewareBase):
        async def call_tool(self, call: Any, context: Any, call_next: Any) -> Any:
            return await call_next(call, context)

    class Plugin:
        __name__ = "bench_tool_middleware"

        @hookimpl
        def register_tool_middleware(self, register: Any) -> None:
            register("pass_through", lambda context: PassThrough())

    return Plugin()


@contextlib.asynccontextmanager
async def runtime(home: str, toml: str, extra: list[object]) -> AsyncIterator[Any]:
    """A started runtime for ``toml`` plus the plugin objects ``extra``."""
    from hubbub.testing import config_for, runtime_for

    async with runtime_for(config_for(Path(home), toml), extra) as started:
        yield started


async def local_rows(stack: contextlib.AsyncExitStack) -> list[Row]:
    """The local tool call rows and the reply rows."""
    from hubbub.contracts import ToolContext
    from hubbub.conversation.writer import Publisher
    from hubbub.events import MessageCreated, Status, ToolFinished, ToolStarted
    from hubbub.models import Message, ToolCall
    from hubbub.testing import principal
    from hubbub_plugins.basic_tools import calculator

    owner = principal("bench")
    arguments = json.dumps({"expression": EXPRESSION})
    plain = await stack.enter_async_context(runtime(temporary(stack), QUIET_CONFIG, []))
    wrapped = await stack.enter_async_context(
        runtime(temporary(stack), QUIET_CONFIG, [middleware_plugin()])
    )
    if plain.tools.middleware or len(wrapped.tools.middleware) != 1:
        raise RuntimeError(
            f"unexpected tool middleware: {plain.tools.middleware}, {wrapped.tools.middleware}"
        )
    conversation = await wrapped.conversations.create(owner, title="bench")
    publish = Publisher(wrapped.events, conversation.id, owner.id)
    context = ToolContext(principal=owner, conversation_id=conversation.id)
    count = iter(range(1 << 62))

    def call() -> ToolCall:
        return ToolCall(id=f"call_{next(count)}", name="basic.calculator", arguments=arguments)

    async def direct() -> str:
        return await calculator(EXPRESSION)

    async def registry() -> Any:
        return await plain.tools.for_caller(owner).call(call(), context)

    async def with_middleware() -> Any:
        return await wrapped.tools.for_caller(owner).call(call(), context)

    async def published(made: ToolCall) -> Any:
        # ReplyWriter._run_tool up to the result (the writer's tool set is the caller's, in
        # the conversation).
        publish(Status(state="calling_tool", detail=made.name))
        publish(ToolStarted(call=made))
        started = time.perf_counter()
        tools = wrapped.tools.for_caller(owner, conversation=conversation)
        result = await tools.call(made, context)
        publish(ToolFinished.of(result, (time.perf_counter() - started) * 1000))
        return result

    async def with_events() -> Any:
        return await published(call())

    async def conversation_path() -> Any:
        # ReplyWriter._run_tool whole, step by step.
        made = call()
        result = await published(made)
        # As ReplyWriter._append: the write shielded from the reply's cancellation.
        storing = asyncio.ensure_future(
            wrapped.memory.append_message(
                Message(
                    role="tool",
                    content=result.content,
                    name=made.name,
                    tool_call_id=made.id,
                    conversation_id=conversation.id,
                    metadata={"is_error": True} if result.is_error else {},
                )
            )
        )
        stored = await asyncio.shield(storing)
        publish(MessageCreated(message=stored))
        return result

    def reply(model: str, content: str) -> Callable[[], Awaitable[Any]]:
        engine = wrapped.conversations

        async def one() -> Any:
            made = await engine.create(owner, title="bench")
            _, answer = await engine.post_message(owner, made.id, content, model=model, wait=True)
            return answer

        return one

    rows = [
        Row("local", "direct function call", direct),
        Row("local", "registry, no middleware", registry),
        Row("local", "registry, 1 pass-through middleware", with_middleware),
        Row("local", "+ events, no storage", with_events),
        Row("local", "conversation path (events, sqlite)", conversation_path),
        Row("reply", "offline/echo reply", reply("offline/echo", f"what is {EXPRESSION}?")),
        Row(
            "reply",
            "offline/tools reply, 1 tool call",
            reply("offline/tools", f"call basic.calculator {arguments}"),
        ),
    ]
    for row in rows:
        assert row.call is not None
        await checked(row.name, row.call, "" if row.name.startswith("offline/echo") else ANSWER)
    return rows


def temporary(stack: contextlib.AsyncExitStack) -> str:
    """A temporary directory removed when ``stack`` closes."""
    return stack.enter_context(tempfile.TemporaryDirectory(prefix="hubbub-bench-tools-"))


# -- MCP ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """bench/_mcp_server.py over streamable HTTP in a child process; yields its MCP URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "http", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the HTTP MCP server exited: {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the HTTP MCP server did not listen within 30 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def discard() -> TextIO:
    """A file that discards what is written to it (a stdio server's stderr)."""
    return open(os.devnull, "w")


@contextlib.asynccontextmanager
async def client_session(transport: str, target: str, *args: str) -> AsyncIterator[Any]:
    """An initialised ``mcp`` ClientSession: over stdio to the command ``target`` (with
    ``args``), or over streamable HTTP to the URL ``target``."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    async with contextlib.AsyncExitStack() as stack:
        if transport == "stdio":
            errors = stack.enter_context(discard())
            parameters = StdioServerParameters(command=target, args=list(args))
            read, write = await stack.enter_async_context(stdio_client(parameters, errlog=errors))
        else:
            read, write, *_ = await stack.enter_async_context(streamable_http_client(target))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


def mcp_toml(url: str, with_time: bool) -> str:
    """``[[mcp.servers]]`` for the bench server over stdio (``bstdio``) and HTTP (``bhttp``),
    and ``mcp-server-time`` (``time``)."""
    servers = [
        ("bstdio", f'transport = "stdio"\ncommand = {json.dumps(sys.executable)}\n'
         f"args = [{json.dumps(str(SERVER))}, \"stdio\"]"),
        ("bhttp", f'transport = "http"\nurl = "{url}"'),
    ]  # fmt: skip
    if with_time:
        servers.append(("time", f'transport = "stdio"\ncommand = {json.dumps(str(TIME_SERVER))}'))
    return QUIET_CONFIG + "".join(
        f'\n[[mcp.servers]]\nname = "{name}"\n{body}\nconnect_timeout = 30\n'
        for name, body in servers
    )


async def mcp_rows(stack: contextlib.AsyncExitStack) -> list[Row]:
    """The MCP round-trip rows (``not available`` ones when hubbub's MCP client is not
    there)."""
    from hubbub.contracts import ToolContext
    from hubbub.models import ToolCall
    from hubbub.testing import principal

    owner = principal("bench")
    context = ToolContext(principal=owner)
    with_time = TIME_SERVER.exists()
    url = stack.enter_context(http_server())
    rows: list[Row] = []
    sessions = {
        "stdio": await stack.enter_async_context(
            client_session("stdio", sys.executable, str(SERVER), "stdio")
        ),
        "http": await stack.enter_async_context(client_session("http", url)),
    }
    if with_time:
        sessions["time"] = await stack.enter_async_context(
            client_session("stdio", str(TIME_SERVER))
        )
    echo = {"text": ECHOED}
    utc = {"timezone": "UTC"}
    for group, session in sessions.items():
        tool, arguments = ("get_current_time", utc) if group == "time" else ("echo", echo)

        async def direct(
            session: Any = session, tool: str = tool, arguments: Any = arguments
        ) -> Any:
            return await session.call_tool(tool, arguments)

        rows.append(Row(group, "mcp ClientSession (direct)", direct))
    try:
        hubbub = await stack.enter_async_context(
            runtime(temporary(stack), mcp_toml(url, with_time), [])
        )
        provider = hubbub.tools.providers.get("mcp")
        if provider is None:
            raise RuntimeError("no tool provider 'mcp' is registered")
        names = {"stdio": "bstdio.echo", "http": "bhttp.echo", "time": "time.get_current_time"}
        deadline = time.monotonic() + 30
        tools = hubbub.tools.for_caller(owner)
        while not all(tools.allows(names[group]) for group in sessions):
            if time.monotonic() > deadline:
                missing = [names[g] for g in sessions if not tools.allows(names[g])]
                raise RuntimeError(f"MCP tools not offered within 30 s: {missing}")
            await asyncio.sleep(0.1)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        for group in sessions:
            if group != "time":
                rows.append(Row(group, "hubbub McpTool.call", None, reason))
            rows.append(Row(group, "hubbub registry (ToolSet.call)", None, reason))
        return rows
    count = iter(range(1 << 62))
    for group in sessions:
        name = names[group]
        arguments = utc if group == "time" else echo
        encoded = json.dumps(arguments)
        if group != "time":
            tool = next(t for t in provider.tools() if t.spec.name == name)

            async def adapter(tool: Any = tool, arguments: Any = arguments) -> Any:
                return await tool.call(arguments, context)

            rows.append(Row(group, "hubbub McpTool.call", adapter))

        async def registry(name: str = name, encoded: str = encoded) -> Any:
            call = ToolCall(id=f"call_{next(count)}", name=name, arguments=encoded)
            return await hubbub.tools.for_caller(owner).call(call, context)

        rows.append(Row(group, "hubbub registry (ToolSet.call)", registry))
    for row in rows:
        assert row.call is not None
        try:
            await checked(
                f"{row.group} {row.name}", row.call, "UTC" if row.group == "time" else ECHOED
            )
        except Exception as exc:
            if not row.name.startswith("hubbub"):
                raise  # the baseline must work
            row.call, row.unavailable = None, f"{type(exc).__name__}: {exc}"
    return rows


# -- measuring and reporting ---------------------------------------------------------------------


async def per_call_ms(call: Callable[[], Awaitable[Any]], seconds: float) -> float:
    """Mean milliseconds a call takes, calls one after another for about ``seconds``."""
    count, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        for _ in range(20):
            await call()
        count += 20
    return elapsed * 1000 / count


def report(rows: list[Row], rounds: int, seconds: float) -> dict[str, Any]:
    """Print each group's figures against its baseline; return them for ``--json``."""
    figures: dict[str, Any] = {}
    print(f"median of {rounds} rounds of {seconds:g} s per row, rows alternated each round")
    for group, heading in GROUPS.items():
        members = [row for row in rows if row.group == group]
        if not members:
            continue
        print(f"{heading}; ratios to {members[0].name}")
        base_row = members[0]
        base = statistics.median(base_row.per_call_ms) if base_row.per_call_ms else None
        for row in members:
            if row.call is None:
                print(f"  {row.name:36} not available yet ({row.unavailable})")
                continue
            ms = statistics.median(row.per_call_ms)
            line = f"  {row.name:36} {ms:8.3f} ms/call ({1000 / ms:9,.0f} calls/s)"
            entry: dict[str, Any] = {"ms": ms}
            if base is not None and row is not base_row:
                entry |= {"added_ms": ms - base, "ratio": ms / base}
                line += f"  added {ms - base:+.3f} ms, ratio {ms / base:5.2f}"
            print(line)
            figures[f"{group}: {row.name}"] = entry
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds alternating the rows (9)")
    parser.add_argument("--seconds", type=float, default=0.3, help="seconds per sample (0.3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 0.05 s")
    parser.add_argument("--json", type=Path, help="also write the medians to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 0.05
    async with contextlib.AsyncExitStack() as stack:
        rows = await local_rows(stack) + await mcp_rows(stack)
        running = [row for row in rows if row.call is not None]
        for round_ in range(args.rounds):
            shift = round_ % len(running)
            for row in running[shift:] + running[:shift]:
                assert row.call is not None
                row.per_call_ms.append(await per_call_ms(row.call, args.seconds))
    figures = report(rows, args.rounds, args.seconds)
    if args.json:
        args.json.write_text(json.dumps({"machine": SHARED, "medians": figures}, indent=1))


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    asyncio.run(main())
