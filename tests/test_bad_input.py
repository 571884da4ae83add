"""Bad input below HTTP: a pagination cursor, whatever a client puts in it, is a page or an
``invalid_request`` naming ``cursor``, never a database error (numbers past SQLite's 64 bits
used to raise ``OverflowError``: a 500)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hubbub.errors import InvalidRequestError
from hubbub.models import Conversation, Message, Page
from hubbub_plugins.sqlite_store import SQLiteStore

INT64 = (-(2**63), 2**63 - 1)


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode()


class Store:
    """A store on a real file, driven from synchronous tests on an event loop of its own (so
    hypothesis can call it once per example)."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = SQLiteStore(str(path))
        self.run(self.store.start())
        conversation = self.run(self.store.create_conversation(Conversation(owner="ada")))
        self.conversation_id = conversation.id
        for text in ("one", "two", "three"):
            message = Message(role="user", content=text, conversation_id=conversation.id)
            self.run(self.store.append_message(message))

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def listings(self, cursor: str) -> list[Any]:
        """Both listings with ``cursor``: each a Page or the exception it raised."""
        outcomes: list[Any] = []
        for listing in (
            self.store.list_conversations("ada", limit=2, cursor=cursor),
            self.store.list_messages(self.conversation_id, limit=2, cursor=cursor),
        ):
            try:
                outcomes.append(self.run(listing))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def close(self) -> None:
        self.run(self.store.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("cursors") / "store.sqlite3")
    yield store
    store.close()


def assert_page_or_invalid(outcomes: list[Any]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, Page):
            continue
        assert isinstance(outcome, InvalidRequestError), repr(outcome)
        assert outcome.field == "cursor"


def tagged(parts: list[Any]) -> list[str]:
    """Cursors of both listings holding ``parts``: a conversations cursor (``c``) and a messages
    cursor (``m``) of the store's conversation."""
    return [cursor_of(["c", *parts]), cursor_of(["m", *parts])]


@pytest.mark.parametrize(
    "parts",
    [
        ["conv_x", 2**63],
        ["conv_x", -(2**63) - 1],
        ["conv_x", 10**30],
        [2**64],
        [-(2**70)],
        [1e308, "conv_x"],
        [10**400, "conv_x"],
    ],
    ids=["2^63", "-2^63-1", "10^30", "seq-2^64", "seq--2^70", "huge-float", "10^400"],
)
def test_numbers_past_64_bits_are_an_invalid_cursor(store: Store, parts: list[Any]) -> None:
    outcomes = [outcome for cursor in tagged(parts) for outcome in store.listings(cursor)]
    assert_page_or_invalid(outcomes)
    if any(isinstance(p, int) and not INT64[0] <= p <= INT64[1] for p in parts):
        assert any(isinstance(o, InvalidRequestError) for o in outcomes)


def test_the_edges_of_64_bits_are_still_cursors(store: Store) -> None:
    conversations, _ = store.listings(cursor_of(["c", INT64[1], "conv_zzz"]))
    assert isinstance(conversations, Page)
    assert len(conversations.items) == 1  # everything sorts before the largest cursor
    # a message cursor names its conversation: [conversation id, sequence number]
    _, messages = store.listings(cursor_of(["m", store.conversation_id, INT64[1]]))
    assert isinstance(messages, Page)
    assert messages.items == []
    _, messages = store.listings(cursor_of(["m", store.conversation_id, INT64[0]]))
    assert [m.content for m in messages.items] == ["one", "two"]
    _, messages = store.listings(cursor_of(["m", store.conversation_id, INT64[1] + 1]))
    assert isinstance(messages, InvalidRequestError)  # past 64 bits: refused, not a crash


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(parts=st.lists(JSON, max_size=3))
@example(parts=["conv_x", 2**63])
@example(parts=[2**100])
def test_any_json_in_a_cursor_is_a_page_or_an_invalid_request(
    store: Store, parts: list[Any]
) -> None:
    for cursor in [cursor_of(parts), *tagged(parts)]:
        assert_page_or_invalid(store.listings(cursor))


@settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    cursor=st.text(max_size=64) | st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode())
)
def test_any_text_as_a_cursor_is_a_page_or_an_invalid_request(store: Store, cursor: str) -> None:
    assert_page_or_invalid(store.listings(cursor))
