"""What a model's tokens cost, and how many it takes and writes, from litellm's bundled table.

litellm ships ``model_prices_and_context_window_backup.json`` (prices per token, context windows
and output limits of several thousand models). :class:`PriceTable` reads that file directly
(found with :mod:`importlib`, like the tokenizer files of :mod:`hubbub.llm.tokens`; litellm is
never imported for it), with every price an exact :class:`~decimal.Decimal` taken from the
JSON text, so a cost is exact to the last digit: never a float.

A model is looked up by :attr:`ModelInfo.pricing_id <hubbub.models.ModelInfo.pricing_id>` (its
upstream id) as written, then without its provider prefix (``openai/gpt-4o-mini`` is priced as
``gpt-4o-mini``). A :class:`~hubbub.models.ModelInfo`'s own ``input_cost_per_token``,
``output_cost_per_token``, ``context_window`` and ``max_output_tokens`` win over the table.

Only the plain per-token prices are applied: cached-prompt discounts, batch and priority tiers,
reasoning-token prices and long-context surcharges are not (a reply's
:class:`~hubbub.models.Usage` does not carry those counts).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import overload

import msgspec

from hubbub.models import ModelInfo, Usage

__all__ = ["ModelPrice", "PriceTable", "bundled_table"]

logger = logging.getLogger("hubbub.llm.pricing")

TABLE_FILE = "model_prices_and_context_window_backup.json"
"""The file litellm ships its table in, at the top of its package."""


def bundled_table() -> Path | None:
    """Where litellm's bundled price table is installed; ``None`` when litellm is not."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / TABLE_FILE
    return path if path.is_file() else None


class ModelPrice(msgspec.Struct, frozen=True, kw_only=True):
    """One model's entry of the table (only what hubbub uses of it)."""

    input_cost_per_token: Decimal | None = None
    """US dollars per prompt token; ``None`` when the table has no price."""
    output_cost_per_token: Decimal | None = None
    """US dollars per completion token; ``None`` when the table has no price."""
    max_input_tokens: int | None = None
    """The context window: tokens the model reads in one request."""
    max_output_tokens: int | None = None
    """Tokens the model writes in one reply at most."""
    max_tokens: int | None = None
    """litellm's older single limit (the output limit for most models, the window for some)."""
    litellm_provider: str | None = None
    """The provider litellm files the model under (``openai``, ``azure``, ``anthropic``...)."""


class PriceTable:
    """Prices and limits of models, by model id.

    Build it with :meth:`load` (async: the file is read and parsed on a worker thread, once per
    process and file) or :meth:`read`; every other method is a synchronous dictionary lookup,
    cheap enough for every request.

    :param prices: the table: model id to its entry.
    """

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)

    def __len__(self) -> int:
        return len(self._prices)

    @classmethod
    async def load(cls, path: Path | None = None) -> PriceTable:
        """The table in ``path`` (default: litellm's bundled one), read off the event loop; the
        same instance for every call with the same file (it is read only once per process)."""
        return await asyncio.to_thread(cls.read, path)

    @classmethod
    def read(cls, path: Path | None = None) -> PriceTable:
        """Like :meth:`load`, but reads on the calling thread (never call it on the event
        loop: parsing the bundled table takes tens of milliseconds)."""
        if path is None:
            path = bundled_table()
            if path is None:
                logger.warning(
                    "litellm's price table is not installed: replies are priced only from "
                    "models' own input_cost_per_token and output_cost_per_token"
                )
                return cls({})
        with _LOCK:
            table = _LOADED.get(path)
            if table is None:
                table = _LOADED[path] = cls(_parse(path.read_bytes()))
        return table

    @classmethod
    def from_json(cls, data: bytes | str) -> PriceTable:
        """A table from JSON text in litellm's format (an object of model id to entry)."""
        return cls(_parse(data))

    def entry(self, model: ModelInfo | str) -> ModelPrice | None:
        """The table's entry for ``model`` (by its :attr:`~hubbub.models.ModelInfo.pricing_id`
        as written, then without its provider prefix); ``None`` when the table lacks it."""
        name = model if isinstance(model, str) else model.pricing_id
        found = self._prices.get(name)
        if found is None and "/" in name:
            found = self._prices.get(name.split("/", 1)[1])
        return found

    def prices(self, model: ModelInfo | str) -> tuple[Decimal, Decimal] | None:
        """US dollars per prompt token and per completion token for ``model`` (its own prices
        first, then the table's); ``None`` when either is unknown."""
        entry = None
        own_input = own_output = None
        if isinstance(model, ModelInfo):
            own_input, own_output = model.input_cost_per_token, model.output_cost_per_token
        if own_input is None or own_output is None:
            entry = self.entry(model)
        prompt, completion = own_input, own_output
        if entry is not None:
            if prompt is None:
                prompt = entry.input_cost_per_token
            if completion is None:
                completion = entry.output_cost_per_token
        if prompt is None or completion is None:
            return None
        return prompt, completion

    @overload
    def cost(self, model: ModelInfo | str, usage: Usage, /) -> Decimal | None: ...

    @overload
    def cost(
        self, model: ModelInfo | str, prompt_tokens: int, completion_tokens: int, /
    ) -> Decimal | None: ...

    def cost(
        self, model: ModelInfo | str, usage: Usage | int, completion_tokens: int = 0, /
    ) -> Decimal | None:
        """What ``usage`` (or ``prompt_tokens`` and ``completion_tokens``) of ``model`` costs
        in US dollars, exactly; ``None`` when its prices are unknown."""
        prices = self.prices(model)
        if prices is None:
            return None
        if isinstance(usage, Usage):
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        else:
            prompt_tokens = usage
        return prices[0] * prompt_tokens + prices[1] * completion_tokens

    def context_window(self, model: ModelInfo | str) -> int | None:
        """Tokens ``model`` reads in one request: its own ``context_window``, else the table's
        ``max_input_tokens``; ``None`` when unknown."""
        if isinstance(model, ModelInfo) and model.context_window is not None:
            return model.context_window
        entry = self.entry(model)
        return entry.max_input_tokens if entry is not None else None

    def max_output_tokens(self, model: ModelInfo | str) -> int | None:
        """Tokens ``model`` writes in one reply at most: its own ``max_output_tokens``, else
        the table's (``max_output_tokens``, else ``max_tokens``); ``None`` when unknown."""
        if isinstance(model, ModelInfo) and model.max_output_tokens is not None:
            return model.max_output_tokens
        entry = self.entry(model)
        if entry is None:
            return None
        return entry.max_output_tokens or entry.max_tokens


_LOCK = threading.Lock()
_LOADED: dict[Path, PriceTable] = {}
_ENTRY = msgspec.json.Decoder(ModelPrice)


def _parse(data: bytes | str) -> dict[str, ModelPrice]:
    """Every well-formed entry of the table's JSON; malformed ones (litellm's ``sample_spec``,
    whose values are explanations) are skipped. Numbers become Decimals from their text."""
    raw = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    prices: dict[str, ModelPrice] = {}
    skipped = 0
    for name, entry in raw.items():
        try:
            prices[name] = _ENTRY.decode(entry)
        except msgspec.ValidationError:
            skipped += 1
    logger.debug("price table: %d models (%d entries skipped)", len(prices), skipped)
    return prices
