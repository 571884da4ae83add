"""MCP tools as hubbub sees them, without a server: names made safe and unique
deterministically, content blocks described in a line, results mapped."""

from __future__ import annotations

import mcp_types

from hubbub.tools.mcp import describe_block, safe_names, to_result
from hubbub.tools.names import name_problem


def test_safe_names_keep_safe_names_and_replace_other_characters() -> None:
    names = safe_names("srv", ["get_time", "weird name!", "dotted.name-1", "émoji🙂", ".x"])
    assert names == {
        ".x": "srv._x",
        "get_time": "srv.get_time",
        "weird name!": "srv.weird_name_",
        "dotted.name-1": "srv.dotted.name-1",
        "émoji🙂": "srv._moji_",
    }
    assert all(name_problem(name) is None for name in names.values())


def test_names_equal_after_sanitising_get_suffixes_whatever_the_listing_order() -> None:
    listed = ["a b", "a_b", "a-b", "a?b"]
    first = safe_names("s", listed)
    assert first == safe_names("s", list(reversed(listed)))
    assert first["a_b"] == "s.a_b"  # a name already safe keeps its spelling
    assert first["a-b"] == "s.a-b"
    assert {first["a b"], first["a?b"]} == {"s.a_b_2", "s.a_b_3"}
    assert first["a b"] == "s.a_b_2"  # sorted: " " before "?"


def test_long_names_are_cut_to_fit_and_stay_unique() -> None:
    server = "x" * 32
    long = ["t" * 200, "t" * 199 + "u"]
    names = safe_names(server, long)
    assert all(len(name) <= 128 for name in names.values())
    assert len(set(names.values())) == 2
    assert all(name_problem(name) is None for name in names.values())


def test_blocks_are_described_in_a_line() -> None:
    image = mcp_types.ImageContent(type="image", data="aGVsbG8=", mime_type="image/png")
    assert describe_block(image) == "[image image/png, 5 bytes]"
    audio = mcp_types.AudioContent(type="audio", data="AAAA", mime_type="audio/wav")
    assert describe_block(audio) == "[audio audio/wav, 3 bytes]"
    link = mcp_types.ResourceLink(
        type="resource_link", uri="file:///a.txt", name="a", mime_type="text/plain"
    )
    assert describe_block(link) == "[resource link file:///a.txt, text/plain]"
    text = mcp_types.EmbeddedResource(
        type="resource",
        resource=mcp_types.TextResourceContents(uri="file:///b.md", text="hello", mime_type=None),
    )
    assert describe_block(text) == "[resource file:///b.md, 5 characters]"


def test_results_join_text_and_carry_errors_and_structured_content() -> None:
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(type="text", text="one"),
            mcp_types.ImageContent(type="image", data="aGVsbG8=", mime_type="image/png"),
            mcp_types.TextContent(type="text", text="two"),
        ],
        structured_content={"n": 2},
        is_error=True,
    )
    mapped = to_result("srv.tool", result)
    assert mapped.content == "one\n[image image/png, 5 bytes]\ntwo"
    assert mapped.is_error is True
    assert mapped.data == {"n": 2}
    assert mapped.name == "srv.tool"
