"""Issue 19's LLM pipeline benchmark: what the pipeline costs per call in process, and token
counting throughput.

* **pipeline overhead**: ``LLMClient.complete`` of a short chat request (``max_tokens`` 64) to
  the ``offline/echo`` model, one call at a time, in a runtime built from the configuration as
  ``hubbub serve`` builds it (the default ``log`` event sink; logging below WARNING off), for:

  - ``no middleware``: the ``budgets`` plugin disabled (the baseline: route, call, publish the
    usage event);
  - ``usage counted, no budgets``: the default (the ``budgets`` plugin's middleware counts every
    call's tokens and cost in the in-process ledger, for ``GET /api/usage``);
  - ``budgets, memory ledger``: ``[budgets.user]`` and ``[budgets.global]`` token and cost
    budgets too large to refuse anything, ``[budgets] backend = "memory"``: every call counts
    the prompt's tokens, reserves in both scopes, calls, settles and records;
  - ``budgets, redis ledger``: the same with ``backend = "redis"`` on a real ``redis-server``
    on a free loopback port (as the other benchmarks start it).

  Rounds alternate them (A B C D A B C D); each figure is the median over the rounds of the
  mean time per call. Targets: a call with in-process budgets under 0.5 ms, with Redis budgets
  under 2 ms (the whole call: count, reserve, call, settle, record); the time added over no
  middleware is printed beside it.

* **token counting**: tokens a second through :class:`hubbub.llm.tokens.TokenCounter` (the
  runtime's counter: encodings read offline from the files litellm ships) for ``cl100k_base``
  (``gpt-4``) and ``o200k_base`` (``gpt-4o``), on chat-sized texts (the paragraphs of this
  repository's docs, each counted once: no cache in the way) and on one long document (all of
  them joined: counted on a worker thread), against tiktoken's own ``encode`` of the same
  texts (the baseline).

Client and redis-server share this 2-core machine with other work: read the ratios.

    .venv/bin/python bench/llm.py [--rounds 5] [--seconds 0.5] [--quick] [--figures pipeline,tokens]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = f"{os.cpu_count()}-core machine: client and redis-server share it"
ALONE = f"one thread of this {os.cpu_count()}-core machine, shared with other work"
TARGET_MEMORY_MS = 0.5
TARGET_REDIS_MS = 2.0
ORDER = (
    "no middleware",
    "usage counted, no budgets",
    "budgets, memory ledger",
    "budgets, redis ledger",
)
BUDGETS = """
[budgets.user]
tokens = 1000000000000
cost = "1000000000"
[budgets.global]
tokens = 1000000000000
cost = "1000000000"
"""
MEMORY = '[budgets]\nbackend = "memory"\n'


@dataclass
class Subject:
    """One pipeline under test: a call, and the time per call of each round."""

    name: str
    call: Callable[[], Awaitable[Any]] | None
    unavailable: str = ""
    target_ms: float | None = None
    per_call_ms: list[float] = field(default_factory=list)


@contextlib.asynccontextmanager
async def pipeline(
    home: str, toml: str, budgets: bool
) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
    """A started runtime for ``toml``; yields one LLM call through its client. With
    ``budgets``, the budgets middleware must be in the client's chain."""
    from hubbub.models import ChatRequest, Message
    from hubbub.testing import config_for, runtime_for

    async with runtime_for(config_for(Path(home), toml)) as runtime:
        client = runtime.llm
        if budgets:
            from hubbub.budgets import BudgetMiddleware

            if not any(isinstance(m, BudgetMiddleware) for m in client.middleware):
                raise RuntimeError("no budgets middleware in the LLM client's chain")
        elif client.middleware:
            raise RuntimeError(f"unexpected middleware: {client.middleware}")
        user = f"bench-{time.monotonic_ns()}"  # a Redis ledger outlives the runtime

        async def call() -> Any:
            request = ChatRequest(
                model="offline/echo",
                messages=[
                    Message(role="system", content="You are a helpful assistant."),
                    Message(role="user", content="hello, how are you today? Tell me a story."),
                ],
                max_tokens=64,
                user=user,
            )
            return await client.complete(request)

        await call()
        yield call


async def per_call_ms(call: Callable[[], Awaitable[Any]], seconds: float) -> float:
    """Mean milliseconds a call takes, calls one after another for about ``seconds``."""
    count, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        for _ in range(20):
            await call()
        count += 20
    return elapsed * 1000 / count


async def pipeline_figures(rounds: int, seconds: float) -> None:
    """The pipelines, alternated; medians and targets printed."""
    print(
        f"pipeline per call (LLMClient.complete, offline/echo, one at a time; {SHARED}): "
        f"median of {rounds} rounds of {seconds:g} s"
    )
    async with contextlib.AsyncExitStack() as stack:
        subjects: list[Subject] = []
        cases: list[tuple[str, str, float | None, bool]] = [
            ("no middleware", '[plugins]\ndisabled = ["budgets"]\n', None, False),
            ("usage counted, no budgets", "", None, True),
            ("budgets, memory ledger", BUDGETS + MEMORY, TARGET_MEMORY_MS, True),
        ]
        try:
            from cache import redis_server

            server = stack.enter_context(redis_server())
            redis = f'[redis]\nurl = "{server.url}"\n[budgets]\nbackend = "redis"\n'
            cases.append(("budgets, redis ledger", BUDGETS + redis, TARGET_REDIS_MS, True))
        except SystemExit as exc:
            subjects.append(Subject("budgets, redis ledger", None, f"no redis-server: {exc}"))
        for name, toml, target, budgets in cases:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="hubbub-bench-"))
            try:
                call = await stack.enter_async_context(pipeline(home, toml, budgets))
            except Exception as exc:  # a ledger or middleware not built yet
                subjects.append(Subject(name, None, f"{type(exc).__name__}: {exc}"))
                continue
            subjects.append(Subject(name, call, target_ms=target))
        subjects.sort(key=lambda s: ORDER.index(s.name))
        running = [s for s in subjects if s.call is not None]
        for round_ in range(rounds):
            shift = round_ % max(1, len(running))
            for subject in running[shift:] + running[:shift]:
                assert subject.call is not None
                subject.per_call_ms.append(await per_call_ms(subject.call, seconds))
    base = statistics.median(subjects[0].per_call_ms) if subjects[0].per_call_ms else None
    for subject in subjects:
        if subject.call is None:
            print(f"  {subject.name:26} not available yet ({subject.unavailable})")
            continue
        ms = statistics.median(subject.per_call_ms)
        line = f"  {subject.name:26} {ms:7.3f} ms/call ({1000 / ms:8,.0f} calls/s)"
        if base is not None and subject is not subjects[0]:
            line += f"  added {ms - base:+.3f} ms"
        if subject.target_ms is not None:
            verdict = "PASS" if ms < subject.target_ms else "FAIL"
            line += f"  {verdict} target < {subject.target_ms:g} ms"
        print(line)


def texts() -> list[str]:
    """Chat-sized texts: the paragraphs of the docs, each distinct."""
    paragraphs: dict[str, None] = {}
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for paragraph in page.read_text().split("\n\n"):
            if len(paragraph.strip()) > 40:
                paragraphs[paragraph.strip()] = None
    return list(paragraphs)


async def token_figures(rounds: int, seconds: float) -> None:
    """Tokens a second through TokenCounter and through tiktoken directly, alternated."""
    from hubbub.llm.tokens import TokenCounter

    chat = texts()
    document = "\n\n".join(chat)
    print(
        f"token counting (TokenCounter.count against tiktoken's encode, same texts; {ALONE}): "
        f"{len(chat)} chat-sized texts (mean {len(document) // len(chat)} chars), one "
        f"document of {len(document):,} chars; median of {rounds} rounds of {seconds:g} s"
    )
    for model in ("gpt-4", "gpt-4o"):
        counter = TokenCounter()
        encoding = await counter.encoding(model)
        if encoding is None:
            print(f"  {model}: encoding not available offline; no figures")
            continue
        for label, items in (("chat-sized", chat), ("document", [document])):

            async def counted(text: str, counter: Any = counter, model: str = model) -> int:
                return int(await counter.count(model, text))

            async def raw(text: str, encoding: Any = encoding) -> int:
                return len(encoding.encode(text, disallowed_special=()))

            own: list[float] = []
            base: list[float] = []
            for _ in range(rounds):
                own.append(await _tokens_per_second(counted, items, seconds))
                base.append(await _tokens_per_second(raw, items, seconds))
            mine, theirs = statistics.median(own), statistics.median(base)
            print(
                f"  {encoding.name:11} {label:10} {mine:12,.0f} tokens/s  "
                f"(tiktoken encode {theirs:12,.0f} tokens/s, ratio {mine / theirs:.2f})"
            )


async def _tokens_per_second(
    count: Callable[[str], Awaitable[int]], items: list[str], seconds: float
) -> float:
    tokens, began = 0, time.perf_counter()
    while True:
        for text in items:
            tokens += await count(text)
        if (elapsed := time.perf_counter() - began) >= seconds:
            return tokens / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="pipeline rounds (5)")
    parser.add_argument("--seconds", type=float, default=0.5, help="seconds per sample (0.5)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 0.05 s")
    parser.add_argument(
        "--figures", default="pipeline,tokens", help="which figures: pipeline, tokens (both)"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 0.05
    figures = {f.strip() for f in args.figures.split(",")}
    if "pipeline" in figures:
        await pipeline_figures(args.rounds, args.seconds)
    if "tokens" in figures:
        await token_figures(args.rounds, args.seconds)


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    asyncio.run(main())
