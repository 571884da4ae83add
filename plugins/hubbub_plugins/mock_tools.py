"""Tool provider ``mock``: demonstration tools that FAKE an outside service.

``mock.weather`` (a made-up forecast for a city) and ``mock.search`` (made-up web results for a
query) answer deterministically (the same arguments, the same answer) without any network, for
demonstrations and tests of the tool loop. They say so in their descriptions (``MOCK (fake
data, not a real service): ...``), in ``hubbub plugins``, and in every answer (``"mock":
true``); their specs carry ``mock = true``, so the registry offers them only when ``[tools]
mock = true``. A real service replaces one by offering a tool of its own under another
namespace (``weather.forecast``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated

import msgspec

from hubbub import hookimpl
from hubbub.tools import StaticToolProvider, tool

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar

__all__ = [
    "Forecast",
    "ForecastDay",
    "SearchArguments",
    "SearchResult",
    "SearchResults",
    "WeatherArguments",
    "search",
    "weather",
]

PREFIX = "MOCK (fake data, not a real service): "
"""How every mock tool's description starts."""

_CONDITIONS = ("sunny", "partly cloudy", "cloudy", "light rain", "rain", "thunderstorms", "snow")
_DAYS = ("today", "tomorrow", "in 2 days", "in 3 days", "in 4 days", "in 5 days", "in 6 days")
_WORDS = ("guide", "overview", "news", "history", "reference", "tutorial", "discussion", "facts")


def _seed(*parts: str) -> bytes:
    """Stable pseudo-random bytes for ``parts`` (case and surrounding spaces ignored)."""
    text = "\x00".join(" ".join(p.split()).lower() for p in parts)
    return hashlib.sha256(text.encode()).digest()


class WeatherArguments(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The arguments of ``mock.weather``."""

    city: Annotated[str, msgspec.Meta(min_length=1, max_length=100, description="A city name.")]
    """The city."""
    days: Annotated[
        int, msgspec.Meta(ge=1, le=7, description="Days of forecast, 1 to 7 (default 3).")
    ] = 3
    """How many days (1 to 7)."""


class ForecastDay(msgspec.Struct, kw_only=True):
    """One made-up day of a forecast."""

    day: str
    """``today``, ``tomorrow``, ``in 2 days``..."""
    condition: str
    """``sunny``, ``rain``..."""
    high_c: int
    """Made-up high, in °C."""
    low_c: int
    """Made-up low, in °C."""
    precipitation_percent: int
    """Made-up chance of precipitation."""


class Forecast(msgspec.Struct, kw_only=True):
    """A made-up forecast (``mock`` is always true)."""

    city: str
    """The city asked for."""
    days: list[ForecastDay]
    """One entry a day, from today."""
    mock: bool = True
    """Always true: this is fake data."""


@tool(
    description=PREFIX + "a made-up weather forecast for a city (same city, same answer).",
    mock=True,
)
async def weather(args: WeatherArguments) -> Forecast:
    """A deterministic fake forecast for ``args.city``."""
    seed = _seed(args.city)
    days = []
    for i in range(args.days):
        a, b, c = seed[3 * i], seed[3 * i + 1], seed[3 * i + 2]
        high = -5 + a % 40
        days.append(
            ForecastDay(
                day=_DAYS[i],
                condition=_CONDITIONS[b % len(_CONDITIONS)],
                high_c=high,
                low_c=high - 2 - c % 10,
                precipitation_percent=(b * 7 + c) % 101,
            )
        )
    return Forecast(city=" ".join(args.city.split()), days=days)


class SearchArguments(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The arguments of ``mock.search``."""

    query: Annotated[
        str, msgspec.Meta(min_length=1, max_length=500, description="What to search for.")
    ]
    """The search query."""
    limit: Annotated[
        int, msgspec.Meta(ge=1, le=10, description="Results wanted, 1 to 10 (default 5).")
    ] = 5
    """How many results (1 to 10)."""


class SearchResult(msgspec.Struct, kw_only=True):
    """One made-up search result (its URL is under ``example.com``, which serves nothing)."""

    title: str
    """A made-up title."""
    url: str
    """A made-up URL under ``https://example.com/mock-search/``."""
    snippet: str
    """A made-up snippet."""


class SearchResults(msgspec.Struct, kw_only=True):
    """Made-up search results (``mock`` is always true)."""

    query: str
    """The query asked for."""
    results: list[SearchResult]
    """The results, best first."""
    mock: bool = True
    """Always true: this is fake data."""


@tool(
    description=PREFIX + "made-up web search results for a query (same query, same answer).",
    mock=True,
)
async def search(args: SearchArguments) -> SearchResults:
    """Deterministic fake results for ``args.query``."""
    query = " ".join(args.query.split())
    seed = _seed(query)
    slug = (
        "-".join(
            "".join(ch for ch in word.lower() if ch.isalnum()) for word in query.split()[:6]
        ).strip("-")
        or "query"
    )
    results = []
    for i in range(args.limit):
        word = _WORDS[seed[i] % len(_WORDS)]
        results.append(
            SearchResult(
                title=f"{query[:80]}: {word} (mock result {i + 1})",
                url=f"https://example.com/mock-search/{slug}/{seed[i]:02x}{i}",
                snippet=f"Fake {word} about {query[:120]}. This result was made up by mock.search.",
            )
        )
    return SearchResults(query=query, results=results)


@hookimpl
def register_tools(register: Registrar) -> None:
    """Register the ``mock`` tool provider."""

    def build(context: ComponentContext[None]) -> StaticToolProvider:
        return StaticToolProvider([weather, search])

    register(
        "mock",
        build,
        description="MOCK: fake weather and search tools for demonstrations and tests"
        " (offered only when [tools] mock = true)",
    )
