"""The price table: litellm's bundled prices read as exact decimals, looked up with and without
a provider prefix, overridden by a model's own prices and limits; costs carried as exact decimal
strings in usage JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hubbub.llm.pricing import PriceTable, bundled_table
from hubbub.models import ModelInfo, Usage


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """litellm's table as the JSON says it, every number an exact Decimal from its text."""
    path = bundled_table()
    assert path is not None, "litellm's bundled price table is not installed"
    table: dict[str, Any] = json.loads(path.read_text(), parse_float=Decimal)
    return table


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.read()


def price(raw: dict[str, Any], name: str) -> tuple[Decimal, Decimal]:
    entry = raw[name]
    return entry["input_cost_per_token"], entry["output_cost_per_token"]


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),  # the provider prefix is not in the table
        ("azure/gpt-4o-mini", "azure/gpt-4o-mini"),  # but this one is
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("gpt-4o", "gpt-4o"),
    ],
)
def test_costs_are_the_tables_prices_times_the_tokens(
    table: PriceTable, raw: dict[str, Any], model: str, key: str
) -> None:
    prompt_price, completion_price = price(raw, key)
    usage = Usage(prompt_tokens=1234, completion_tokens=567, total_tokens=1801)
    cost = table.cost(model, usage)
    assert cost == prompt_price * 1234 + completion_price * 567
    assert table.cost(model, 1234, 567) == cost  # the form budgets reserve with
    assert table.cost(ModelInfo(id=model, provider="p"), usage) == cost
    assert table.prices(model) == (prompt_price, completion_price)


def test_costs_are_exact_decimals(table: PriceTable, raw: dict[str, Any]) -> None:
    prompt_price, completion_price = price(raw, "gpt-4o-mini")
    million = table.cost("gpt-4o-mini", Usage(prompt_tokens=1_000_000))
    assert isinstance(million, Decimal)
    assert million == prompt_price * 1_000_000  # exactly, to the last digit
    assert million == Decimal(str(raw["gpt-4o-mini"]["input_cost_per_token"])) * 10**6
    # a million one-token replies add up to exactly the price of a million tokens (as floats,
    # they would drift: the sum of a million 1.5e-07 is not 0.15)
    one = table.cost("gpt-4o-mini", 1, 0)
    assert one is not None
    assert sum([one] * 1_000_000, Decimal(0)) == million
    assert sum([float(one)] * 1_000_000) != float(million)
    completions = table.cost("gpt-4o-mini", 0, 1_000_000)
    assert completions == completion_price * 1_000_000


def test_a_model_is_priced_by_its_upstream_id(table: PriceTable, raw: dict[str, Any]) -> None:
    model = ModelInfo(id="up-gpt", provider="openai_provider", upstream_model="gpt-4o-mini")
    prompt_price, completion_price = price(raw, "gpt-4o-mini")
    assert table.cost(model, 10, 20) == prompt_price * 10 + completion_price * 20
    assert table.cost("up-gpt", 10, 20) is None  # the name clients use is not in the table


def test_a_models_own_prices_win(table: PriceTable, raw: dict[str, Any]) -> None:
    _, completion_price = price(raw, "gpt-4o-mini")
    cheaper = ModelInfo(
        id="gpt-4o-mini", provider="openai_provider", input_cost_per_token=Decimal("0.0000001")
    )
    assert table.cost(cheaper, 1000, 10) == Decimal("0.0001") + completion_price * 10
    free = ModelInfo(
        id="offline/echo",
        provider="offline",
        input_cost_per_token=Decimal(0),
        output_cost_per_token=Decimal(0),
    )
    assert table.cost(free, 1000, 1000) == 0
    both = ModelInfo(
        id="local/llama",
        provider="openai_provider",
        input_cost_per_token=Decimal("0.000002"),
        output_cost_per_token=Decimal("0.000003"),
    )
    assert table.cost(both, 3, 5) == Decimal("0.000021")


def test_unknown_prices_are_none_not_zero(table: PriceTable) -> None:
    assert table.cost("nobody/never-heard-of-it", 10, 10) is None
    half = ModelInfo(id="local/llama", provider="p", input_cost_per_token=Decimal("0.000001"))
    assert table.cost(half, 10, 10) is None  # the completion price is still unknown
    assert table.entry("sample_spec") is None  # litellm's explanatory entry is not a model


def test_limits_come_from_the_table_unless_the_model_has_its_own(
    table: PriceTable, raw: dict[str, Any]
) -> None:
    entry = raw["claude-sonnet-4-5"]
    assert table.context_window("anthropic/claude-sonnet-4-5") == entry["max_input_tokens"]
    assert table.max_output_tokens("anthropic/claude-sonnet-4-5") == entry["max_output_tokens"]
    own = ModelInfo(
        id="claude-sonnet-4-5", provider="p", context_window=1000, max_output_tokens=100
    )
    assert table.context_window(own) == 1000
    assert table.max_output_tokens(own) == 100
    assert table.context_window("nobody/never-heard-of-it") is None
    assert table.max_output_tokens("nobody/never-heard-of-it") is None


def test_max_tokens_stands_in_for_a_missing_output_limit() -> None:
    table = PriceTable.from_json(b'{"old": {"max_tokens": 4096, "input_cost_per_token": 1e-6}}')
    assert table.max_output_tokens("old") == 4096
    assert table.cost("old", 1, 1) is None  # no output price


def test_every_entry_of_the_table_is_read(table: PriceTable, raw: dict[str, Any]) -> None:
    assert len(table) == len(raw) - 1  # all but sample_spec
    assert len(table) > 1000


async def test_load_reads_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"m": {"input_cost_per_token": 0.5, "output_cost_per_token": 1.25}}')
    first = await PriceTable.load(path)
    path.write_text("{}")
    second = await PriceTable.load(path)
    assert second is first  # read once per process
    assert second.cost("m", 2, 4) == Decimal("6.00")
    assert (await PriceTable.load()) is PriceTable.read()


def test_the_table_is_read_without_importing_litellm() -> None:
    script = (
        "import sys\n"
        "from hubbub.llm.pricing import PriceTable\n"
        "assert PriceTable.read().cost('gpt-4o-mini', 1, 1) is not None\n"
        "print('litellm' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_usage_carries_the_cost_as_an_exact_decimal_string() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4, cost=Decimal("0.000135"))
    data = msgspec.json.encode(usage)
    assert json.loads(data)["cost"] == "0.000135"
    assert msgspec.json.decode(data, type=Usage) == usage
    # a JSON number (an older writer) is read from its text, not through a float
    decoded = msgspec.json.decode(b'{"cost": 0.30000000000000004441}', type=Usage)
    assert decoded.cost == Decimal("0.30000000000000004441")
    assert "cost" not in json.loads(msgspec.json.encode(Usage(prompt_tokens=1)))


def test_the_cost_matches_litellms_own_calculation(table: PriceTable) -> None:
    litellm = pytest.importorskip("litellm")
    prompt, completion = litellm.cost_per_token(
        model="gpt-4o-mini", prompt_tokens=1234, completion_tokens=567
    )
    ours = table.cost("gpt-4o-mini", 1234, 567)
    assert ours is not None
    assert float(ours) == pytest.approx(prompt + completion, rel=1e-12)
