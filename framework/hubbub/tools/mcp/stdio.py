"""The stdio transport of an MCP server, with a bound on what the server writes.

Like the ``mcp`` package's ``stdio_client`` (whose shutdown it follows: close stdin, wait,
SIGTERM the process group, SIGKILL), but hubbub spawns the process and reads its stdout
itself: a line (one message) longer than :data:`MAX_MESSAGE_BYTES` ends the connection instead
of growing in memory, lines are assembled in linear time (the package joins each chunk to the
line so far: a 32 MB message cost 14.9 s of CPU on the event loop), and a line that is not
JSON-RPC reaches the session as an error value, without a traceback (the session's message
handler reports it, rate-limited).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TextIO

import anyio
import anyio.abc
import anyio.lowlevel
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.stdio import get_default_environment
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

from hubbub.tools.mcp.http_limits import MAX_RESPONSE_BYTES

__all__ = ["MAX_MESSAGE_BYTES", "MessageTooLarge", "stdio_transport"]

logger = logging.getLogger("hubbub.tools.mcp")

MAX_MESSAGE_BYTES = MAX_RESPONSE_BYTES
"""The longest line (one message) a stdio server may write to its stdout, in bytes: a longer
one ends the connection (the call it answered fails, and the server is restarted)."""

READ_CHUNK = 65536
"""Bytes read from the server's stdout at once."""

EXIT_GRACE = 2.0
"""Seconds a server gets to exit after its stdin closes, and again after SIGTERM."""

FLUSH_GRACE = 0.5
"""Seconds the writer gets to send messages already accepted, when the transport closes."""

_POLL = 0.01


class MessageTooLarge(Exception):
    """The server wrote a line longer than :data:`MAX_MESSAGE_BYTES`."""


async def read_lines(
    stream: anyio.abc.ByteReceiveStream, limit: int = MAX_MESSAGE_BYTES
) -> AsyncIterator[bytes]:
    """The lines of ``stream`` (without their newline), in linear time; raises
    :class:`MessageTooLarge` when one passes ``limit`` bytes. A last line without a newline is
    dropped (a message is a whole line)."""
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await stream.receive(READ_CHUNK)
        except anyio.EndOfStream:
            return
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            size += end - start
            if size > limit:
                raise MessageTooLarge(f"the server wrote a message larger than {limit} bytes")
            parts.append(chunk[start:end])
            yield b"".join(parts)
            parts, size, start = [], 0, end + 1
        if start < len(chunk):
            size += len(chunk) - start
            if size > limit:
                raise MessageTooLarge(f"the server wrote a message larger than {limit} bytes")
            parts.append(chunk[start:])


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        text = line[:200].decode("utf-8", "replace")
        return ValueError(
            f"a line that is not a JSON-RPC message: {text!r} ({exc.__class__.__name__})"
        )


@contextlib.asynccontextmanager
async def stdio_transport(
    command: str,
    args: list[str],
    *,
    env: dict[str, str],
    cwd: str | None,
    errlog: TextIO,
    failure: list[str],
    limit: int = MAX_MESSAGE_BYTES,
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """Run ``command`` (in a new session: its own process group) with exactly ``env`` (plus
    the ``mcp`` package's defaults: ``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``,
    ``USER``) and its stderr to ``errlog``; yield the session's streams. Why the connection
    ended, when the transport knows (a message too large), is appended to ``failure``. Leaving
    stops the process (and its group), whatever happens."""
    process = await anyio.open_process(
        [command, *args],
        env=get_default_environment() | env,
        stderr=errlog,
        cwd=cwd,
        start_new_session=True,
    )
    stdout, stdin = process.stdout, process.stdin
    assert stdout is not None
    assert stdin is not None
    # no awaits until the task group is entered: a cancellation would leak the process
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    writer_done = anyio.Event()

    async def reader() -> None:
        try:
            async with read_writer:
                async for line in read_lines(stdout, limit):
                    if not line.strip():
                        continue
                    await read_writer.send(_parse(line))
        except MessageTooLarge as exc:
            failure.append(str(exc))
            logger.warning("%s; disconnecting", exc)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass  # the session or the pipe is gone
        finally:
            await read_writer.aclose()
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                while True:  # drain: a server blocked writing could not exit
                    await stdout.receive(READ_CHUNK)

    async def writer() -> None:
        try:
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send((data + "\n").encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()  # the session sees the end, not a request hanging
        finally:
            writer_done.set()

    async def exited(grace: float) -> bool:
        # polled: process.wait() also waits for the pipes' end, which a grandchild may hold
        for _ in range(round(grace / _POLL)):
            if process.returncode is not None:
                return True
            await anyio.sleep(_POLL)
        return process.returncode is not None

    async def shutdown() -> None:
        read_stream.close()
        write_stream.close()
        with anyio.move_on_after(FLUSH_GRACE):
            await writer_done.wait()
        with contextlib.suppress(Exception):
            await stdin.aclose()
        if not await exited(EXIT_GRACE):
            await terminate_posix_process_tree(process, EXIT_GRACE)
            if not await exited(EXIT_GRACE):
                logger.warning("MCP server process %d survived SIGKILL; abandoned", process.pid)
        with contextlib.suppress(Exception):
            await stdout.aclose()
        _close_transport(process)
        for stream in (read_stream, write_stream, read_writer, write_reader):
            stream.close()
        await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        group.start_soon(writer)
        try:
            yield read_stream, write_stream
        finally:
            with anyio.CancelScope(shield=True):
                await shutdown()
            group.cancel_scope.cancel()


def _close_transport(process: Any) -> None:
    """Close asyncio's subprocess transport (it would warn at exit while a grandchild holds a
    pipe); nothing public exposes it."""
    transport = getattr(getattr(process, "_process", None), "_transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        with contextlib.suppress(PermissionError):
            close()
