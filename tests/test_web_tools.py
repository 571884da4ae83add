"""The ``web`` tool provider end to end: ``web.fetch`` in a whole Runtime, through the tool
registry (argument validation, the model-facing error text) and a conversation's tool loop,
against a real local HTTP server; its settings checked when the configuration is loaded."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import msgspec
import pytest
from web_support import LocalServer, Request, ScriptedResolver, answer, response

from hubbub.contracts import ToolContext
from hubbub.errors import ToolError
from hubbub.models import Principal, ToolCall
from hubbub.runtime import Runtime
from hubbub_plugins.web_tools import WebToolsSettings, fetch_tool

PAGE = b"<html><head><title>Local</title><style>p{}</style></head><p>Hello from the page</p>"


def fetch_call(arguments: dict[str, object] | str, call_id: str = "c1") -> ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(id=call_id, name="web.fetch", arguments=text)


async def test_fetch_through_the_registry_refuses_then_allows_a_local_server(
    make_runtime: Callable[..., Runtime],
) -> None:
    server = await LocalServer(answer(response(body=PAGE, content_type="text/html"))).start()
    url = server.url("/doc")
    try:
        async with make_runtime(f"[plugins.web_tools]\nallow_ports = [{server.port}]\n") as rt:
            assert "web.fetch" in [s.name for s in rt.tools.specs()]
            result = await rt.tools.call(fetch_call({"url": url}), ToolContext())
            assert result.is_error
            assert result.content == "error: refused: 127.0.0.1 is a loopback address"
            result = await rt.tools.call(
                fetch_call({"url": "http://[::ffff:127.0.0.1]/"}), ToolContext()
            )
            assert result.content == "error: refused: ::ffff:7f00:1 is a loopback address"
            result = await rt.tools.call(
                fetch_call({"url": f"http://2130706433:{server.port}/"}), ToolContext()
            )
            assert result.content == "error: refused: 127.0.0.1 is a loopback address"
            result = await rt.tools.call(fetch_call({"url": "file:///etc/passwd"}), ToolContext())
            assert (
                result.content == "error: refused: only http and https URLs are fetched, not file:"
            )
            # invalid arguments come back for the model to correct, nothing fetched
            result = await rt.tools.call(fetch_call({"address": url}), ToolContext())
            assert result.is_error
            assert result.content.startswith("error: invalid arguments:")
            result = await rt.tools.call(fetch_call({"url": url, "max_bytes": 0}), ToolContext())
            assert result.content.startswith("error: invalid arguments:")
            assert "max_bytes" in result.content
        assert server.connections == 0

        allowed = (
            f"[plugins.web_tools]\nallow_ports = [{server.port}]\n"
            'allow_networks = ["127.0.0.0/8"]\n'
        )
        async with make_runtime(allowed) as rt:
            result = await rt.tools.call(fetch_call({"url": url}), ToolContext())
            assert not result.is_error
            assert isinstance(result.data, dict)
            assert result.data["text"] == "Hello from the page"
            assert result.data["title"] == "Local"
            assert json.loads(result.content)["url"] == url
            result = await rt.tools.call(fetch_call({"url": url, "max_bytes": 10}), ToolContext())
            assert isinstance(result.data, dict)
            assert result.data["truncated"] is True
        assert server.connections == 2
    finally:
        await server.close()


async def test_fetch_in_a_conversation_tool_loop(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    server = await LocalServer(answer(response(body=b"the fetched words"))).start()
    config = (
        f'[plugins.web_tools]\nallow_ports = [{server.port}]\nallow_networks = ["127.0.0.1/32"]\n'
    )
    try:
        async with make_runtime(config) as runtime:
            engine = runtime.conversations
            conversation = await engine.create(principal, model="offline/tools")
            ask = json.dumps({"url": server.url("/words")})
            _, reply = await engine.post_message(
                principal, conversation.id, f"call web.fetch {ask}", wait=True
            )
            assert reply is not None
            assert "the fetched words" in reply.content
            denied = json.dumps({"url": "http://169.254.169.254/latest/meta-data/"})
            _, reply = await engine.post_message(
                principal, conversation.id, f"call web.fetch {denied}", wait=True
            )
            assert reply is not None
            messages = (await engine.messages(principal, conversation.id)).items
            tool_messages = [m.content for m in messages if m.role == "tool"]
            assert tool_messages[-1] == (
                "error: refused: 169.254.169.254 is a link-local address (cloud metadata lives"
                " there)"
            )
            assert "link-local" in reply.content  # the model was told, the conversation went on
        assert [r.target for r in server.requests] == ["/words"]
    finally:
        await server.close()


async def test_the_tool_turns_fetch_errors_into_tool_errors() -> None:
    resolver = ScriptedResolver({"evil.test": [["10.0.0.1"]]})
    fetch = fetch_tool(WebToolsSettings(), resolver=resolver)
    with pytest.raises(ToolError, match=r"refused: evil\.test resolves to a private address"):
        await fetch.call({"url": "http://evil.test/"}, ToolContext())
    assert fetch.spec.timeout is not None
    assert fetch.spec.timeout > WebToolsSettings().timeout  # the fetch's deadline speaks first


async def test_redirects_through_the_tool_are_checked(
    make_runtime: Callable[..., Runtime],
) -> None:
    async def handle(request: Request, writer: object) -> None:
        writer.write(  # type: ignore[attr-defined]
            response(302, b"", content_type=None, headers=[("Location", "http://10.1.2.3/")])
        )

    server = await LocalServer(handle).start()
    config = (
        f'[plugins.web_tools]\nallow_ports = [{server.port}]\nallow_networks = ["127.0.0.1/32"]\n'
    )
    try:
        async with make_runtime(config) as rt:
            result = await rt.tools.call(fetch_call({"url": server.url()}), ToolContext())
        assert result.content.startswith("error: refused: 10.1.2.3 is a private address")
        assert "redirected to http://10.1.2.3/" in result.content
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"allow_networks": ["10.0.0.0/33"]}, "allow_networks"),
        ({"allow_networks": ["not a network"]}, "allow_networks"),
        ({"allow_hosts": ["bad host!"]}, "allow_hosts"),
        ({"allow_ports": [70000]}, "allow_ports"),
        ({"timeout": 0}, "timeout"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"allow_everything": True}, "allow_everything"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(
    settings: dict[str, object], words: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=words):
        msgspec.convert(settings, WebToolsSettings)


def test_bad_settings_stop_the_configuration_from_loading(
    make_runtime: Callable[..., Runtime],
) -> None:
    with pytest.raises(Exception, match="allow_networks"):
        make_runtime('[plugins.web_tools]\nallow_networks = ["10.0.0.0/33"]\n')


async def test_fetches_are_logged_with_who_and_where_but_no_path_or_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await LocalServer(answer(response(body=b"ok"))).start()
    settings = WebToolsSettings(allow_networks=["127.0.0.1/32"], allow_ports=[server.port])
    fetch = fetch_tool(settings, logger=logging.getLogger("test.web_tools"))
    context = ToolContext(principal=Principal(id="usr_1", name="Ada"), conversation_id="cnv_1")
    try:
        with caplog.at_level(logging.INFO, logger="test.web_tools"):
            await fetch.call({"url": server.url("/p?token=secret-token")}, context)
            with pytest.raises(ToolError):
                await fetch.call({"url": "http://10.0.0.1/?token=secret-token"}, context)
    finally:
        await server.close()
    fetched, refused = caplog.records
    assert fetched.getMessage() == "url fetched"
    assert fetched.origin == f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    assert fetched.user == "usr_1"  # type: ignore[attr-defined]
    assert refused.conversation_id == "cnv_1"  # type: ignore[attr-defined]
    assert "10.0.0.1 is a private address" in refused.getMessage()
    for record in caplog.records:
        assert "secret-token" not in str(record.__dict__)


async def test_error_messages_do_not_repeat_query_strings() -> None:
    server = await LocalServer(answer(response(404, b"gone"))).start()
    settings = WebToolsSettings(allow_networks=["127.0.0.1/32"], allow_ports=[server.port])
    try:
        with pytest.raises(ToolError) as caught:
            await fetch_tool(settings).call({"url": server.url("/x?key=hunter2")}, ToolContext())
    finally:
        await server.close()
    assert str(caught.value) == f"HTTP 404 from http://127.0.0.1:{server.port}/x?..."
