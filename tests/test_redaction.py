"""Secrets stay out of what hubbub shows (``config show``), and error text that leaves the process
(problem documents, tool results a model reads) shows nothing of the process's insides."""

from __future__ import annotations

import json
import socket
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from support import BASE_TOML, run_cli

from hubbub.config import encode_config, load_config
from hubbub.contracts import ToolContext
from hubbub.errors import ProviderError, ToolError
from hubbub.models import ChatRequest, Message, ToolCall
from hubbub.redaction import (
    REDACTED,
    describe_error,
    is_secret_name,
    public_message,
    redact,
    redact_urls,
)
from hubbub.runtime import Runtime
from hubbub.tools import ToolRegistry, function_tools
from hubbub_plugins.basic_tools import current_time

SECRETS = ("hunter2", "sk-live-123", "sk-header-456", "cookie-789", "qs-secret-000", "key-xyz")

CONFIG = (
    BASE_TOML
    + """
[llm]
providers = ["litellm", "offline"]

[[plugins.litellm_provider.models]]
name = "proxy"
model = "openai/gpt-4o-mini"
api_base = "https://bob:hunter2@llm.example:8443/v1?api-version=2024&api-key=qs-secret-000"
description = "through the proxy"

[plugins.litellm_provider.models.options]
num_retries = 2

[plugins.litellm_provider.models.options.extra_headers]
Authorization = "Bearer sk-header-456"
"X-Api-Key" = "key-xyz"
Cookie = "cookie-789"
"X-Team" = "research"
"""
)


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret


@pytest.mark.parametrize("as_json", [False, True], ids=["toml", "json"])
def test_config_show_redacts_urls_and_headers_in_plugin_settings(
    tmp_path: Path, as_json: bool
) -> None:
    (tmp_path / "hubbub.toml").write_text(CONFIG)
    shown = run_cli(["config", "show", *(["--json"] if as_json else [])], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    _assert_no_secret(shown.stdout)
    data = json.loads(shown.stdout) if as_json else tomllib.loads(shown.stdout)
    (model,) = data["plugins"]["litellm_provider"]["models"]
    assert model["api_base"] == (
        f"https://{REDACTED}@llm.example:8443/v1?api-version=2024&api-key={REDACTED}"
    )
    headers = model["options"]["extra_headers"]
    assert headers == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "Cookie": REDACTED,
        "X-Team": "research",  # not a credential: shown
    }
    assert model["options"]["num_retries"] == 2
    assert model["description"] == "through the proxy"


def test_raw_plugin_tables_and_core_tables_are_redacted_too() -> None:
    config = load_config(
        text=CONFIG
        + """
[plugins.undeclared]
url = "redis://:hunter2@cache.internal:6379/0"
headers = { proxy-authorization = "Basic sk-live-123" }
endpoints = ["https://h.example/x?token=sk-live-123&page=2"]
max_tokens = 5
token_url = "https://idp.example/token"
""",
        env={},
    )
    shown = encode_config(config)  # no decoded settings: the raw tables
    _assert_no_secret(json.dumps(shown))
    raw = shown["plugins"]["undeclared"]
    assert raw["url"] == f"redis://{REDACTED}@cache.internal:6379/0"
    assert raw["headers"] == {"proxy-authorization": REDACTED}
    assert raw["endpoints"] == [f"https://h.example/x?token={REDACTED}&page=2"]
    assert raw["max_tokens"] == 5  # counts of tokens are no token
    assert raw["token_url"] == "https://idp.example/token"  # where tokens come from, not one
    assert shown["server"]["host"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("Authorization", True),
        ("proxy-authorization", True),
        ("x-api-key", True),
        ("X-Api-Key", True),
        ("apiKey", True),
        ("client_secret", True),
        ("aws_secret_access_key", True),
        ("set-cookie", True),
        ("refresh_token", True),
        ("password", True),
        ("max_tokens", False),
        ("token_url", False),
        ("password_file", False),
        ("api_key_env", False),
        ("keys", False),
        ("auth", False),
        ("busy_timeout", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_query_parameters_that_carry_credentials() -> None:
    assert is_secret_name("key", query=True)
    assert is_secret_name("sig", query=True)
    assert not is_secret_name("key")
    assert not is_secret_name("page", query=True)
    text = "see https://u:p@h.example/a?key=1&sig=2&page=3#top and http://plain.example/"
    assert redact_urls(text) == (
        f"see https://{REDACTED}@h.example/a?key={REDACTED}&sig={REDACTED}&page=3#top "
        "and http://plain.example/"
    )


def test_redact_keeps_what_is_missing_visible() -> None:
    assert redact({"api_key": None, "password": "", "token": "t"}) == {
        "api_key": None,
        "password": "",
        "token": REDACTED,
    }
    assert redact(["Authorization: Bearer abc", "Bearer sk-abcdef123456", "--verbose"]) == [
        f"Authorization: {REDACTED}",
        f"Bearer {REDACTED}",
        "--verbose",
    ]


# -- error text ------------------------------------------------------------------------------

TRANSPORT_ERROR = (
    "litellm.InternalServerError: AnthropicException - Cannot connect to host 127.0.0.1:9 "
    "ssl:<ssl.SSLContext object at 0x7f05314e4050> [Connect call failed ('127.0.0.1', 9)]"
)


def test_public_message_drops_object_addresses() -> None:
    message = public_message(TRANSPORT_ERROR)
    assert "0x" not in message
    assert "SSLContext" not in message
    assert message == (
        "litellm.InternalServerError: AnthropicException - Cannot connect to host 127.0.0.1:9 "
        "[Connect call failed ('127.0.0.1', 9)]"
    )
    nested = public_message("bad callback <bound method A.run of <a.A object at 0xdeadbeef>>")
    assert nested == "bad callback"


def test_public_message_shortens_local_paths_only(tmp_path: Path) -> None:
    deep = tmp_path / ".venv" / "lib" / "site-packages" / "tzdata" / "zoneinfo"
    deep.mkdir(parents=True)
    error = IsADirectoryError(21, "Is a directory", str(deep / "Europe"))
    assert public_message(error) == "[Errno 21] Is a directory: 'Europe'"
    assert describe_error(error) == "IsADirectoryError: [Errno 21] Is a directory: 'Europe'"
    # a URL path in a message is no file of this machine: kept
    assert public_message("use POST /api/conversations/x/messages") == (
        "use POST /api/conversations/x/messages"
    )


def test_public_message_is_one_bounded_line() -> None:
    message = public_message("first\nsecond\tthird " + "x" * 2000)
    assert "\n" not in message
    assert message.startswith("first second third")
    assert len(message) <= 500
    assert describe_error(ValueError()) == "ValueError"


async def test_current_time_with_a_directory_of_the_zone_database_is_a_clean_error() -> None:
    for zone in ("Europe", "America", "x" * 300):
        with pytest.raises(ToolError) as refused:
            await current_time(zone)
        answer = f"error: {refused.value}"
        assert answer.startswith("error: unknown time zone"), answer
        assert "/" not in answer.split("such as")[0], answer
        assert "Errno" not in answer


async def test_a_failing_tool_s_error_shows_no_path_nor_address(tmp_path: Path) -> None:
    async def leaky() -> str:
        """Fails like library code does."""
        raise OSError(f"cannot read {tmp_path}/secret/internal.db via <socket.socket at 0x7f00>")

    registry = ToolRegistry({"t": function_tools(leaky)})
    await registry.start()
    result = await registry.call(ToolCall(id="c", name="t.leaky"), ToolContext())
    assert result.is_error
    assert result.content == "error: tool 't.leaky' failed: OSError: cannot read internal.db via"
    assert str(tmp_path) not in result.content


async def test_tool_argument_errors_name_the_argument() -> None:
    registry = ToolRegistry({"t": function_tools(current_time)})
    await registry.start()
    result = await registry.call(
        ToolCall(id="c", name="t.current_time", arguments='{"timezone": 3}'), ToolContext()
    )
    assert result.is_error
    assert result.content == "error: invalid arguments: timezone: expected 'str', got 'int'"
    deep = '{"timezone": ' + "[" * 5000 + "]" * 5000 + "}"
    nested = await registry.call(
        ToolCall(id="d", name="t.current_time", arguments=deep), ToolContext()
    )
    assert nested.content == "error: arguments are not valid JSON: nested too deeply"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_provider_s_transport_error_shows_no_object_address(
    make_runtime: Callable[..., Runtime],
) -> None:
    # A self-hosted model behind https on a closed port: litellm's aiohttp transport says
    # "ssl:<ssl.SSLContext object at 0x...>"; the error hubbub raises (what clients see) not.
    runtime = make_runtime(f"""
        [llm]
        providers = ["litellm"]
        default_model = "vllm"
        [[plugins.litellm_provider.models]]
        name = "vllm"
        model = "hosted_vllm/x"
        api_key = "sk-test"
        api_base = "https://127.0.0.1:{_closed_port()}"
        options = {{ max_retries = 0, num_retries = 0 }}
        """)
    async with runtime:
        with pytest.raises(ProviderError) as caught:
            await runtime.llm.complete(
                ChatRequest(model="vllm", messages=[Message(role="user", content="hi")])
            )
    message = str(caught.value)
    assert "Cannot connect to host 127.0.0.1" in message
    assert "object at 0x" not in message
    assert "SSLContext" not in message


def test_public_message_keeps_messages_about_secret_fields_readable() -> None:
    # field problems name the field first: not a header to redact
    assert public_message("password: must be at least 8 characters") == (
        "password: must be at least 8 characters"
    )
    assert public_message("authentication required: send Authorization: Bearer <key>") == (
        "authentication required: send Authorization: Bearer <key>"
    )
    assert public_message("Token has expired") == "Token has expired"
    assert public_message("rejected Bearer abcdefgh12345678") == f"rejected Bearer {REDACTED}"


def test_a_huge_message_costs_no_more_than_a_bounded_one() -> None:
    # The messages are the callers' own text (a 1 MB model name echoed in "model ... is not
    # available"): a pattern that is quadratic on a long run froze the event loop for seconds.
    import time

    def cost(text: str) -> float:
        began = time.perf_counter()
        for _ in range(3):
            public_message(text)
        return time.perf_counter() - began

    small = cost("model " + "a" * 5_000 + "\x00 is not available")
    huge = cost("model " + "a" * 1_000_000 + "\x00 is not available")
    assert huge < small * 50 + 0.05  # linear would be 200x; bounded is ~1x; quadratic 40,000x
    assert len(public_message("a" * 1_000_000)) <= 500
