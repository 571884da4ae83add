"""Routing one request to a model that answers: retries, fallbacks, breakers and deadlines.

Every request names a model; ``[llm.fallbacks]`` may give it a chain of others to try when it
fails. For each model of the chain in turn, the router:

* skips it at once while its upstream's circuit breaker is open (an upstream that keeps failing
  is not waited for again and again; models on one upstream share a breaker);
* tries it up to ``1 + [llm] retries`` times, each try bounded by ``[llm] request_timeout``,
  waiting between tries with exponential back-off and full jitter, or as long as the upstream
  asked (``Retry-After``), but only after a retryable failure (a timeout, a connection error,
  a 429, a 5xx);
* moves on to the next model after any provider failure the retries did not cure (a context
  window overflow is never retried: a fallback may have a larger window);
* but answers at once, as a 400, a request the upstream refused as such (its 400 or 422 for an
  invalid parameter: :class:`~hubbub.errors.ProviderRequestError`), which no other model would
  take either and which says nothing against the upstream's breaker; so does any other
  refusal (a :class:`~hubbub.errors.HubbubError` that is not a provider failure, such as a
  provider's own pool being full).

The whole, fallbacks included, is bounded by ``[llm] deadline`` (for a stream: until its first
chunk). Each retry and fallback is logged and published as a ``status`` event for the request's
owner (``state`` ``retrying`` or ``fallback``), so a client watching its events sees why a
reply is slow or comes from another model.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from hubbub.contracts import LLMProvider
from hubbub.errors import (
    ConfigError,
    ConfigIssue,
    ContextWindowExceededError,
    HubbubError,
    ProviderError,
    ProviderRequestError,
    ProviderTimeoutError,
)
from hubbub.events import EventBus, Status
from hubbub.models import ChatRequest, Health, ModelInfo
from hubbub.redaction import public_message
from hubbub.resilience import CircuitBreaker, CircuitOpenError, is_retryable

__all__ = ["RoutePolicy", "Router"]

logger = logging.getLogger("hubbub.llm")

T = TypeVar("T")


@dataclass(frozen=True)
class RoutePolicy:
    """How hard the router tries (``[llm]``'s settings)."""

    attempt_timeout: float = 60.0
    """Seconds one try may take (for a stream: until its first chunk, then between chunks)."""
    deadline: float = 120.0
    """Seconds all tries of all models may take together (for a stream: until its first
    chunk)."""
    retries: int = 2
    """Tries of one model after its first, on retryable failures only."""
    retry_delay: float = 0.5
    """The longest wait before the first retry; doubled for each next one (full jitter)."""
    retry_max_delay: float = 10.0
    """The longest wait between two tries; an upstream asking for longer is not waited for
    (the next model is tried instead)."""
    breaker_failures: int = 5
    """Consecutive failures of a model's upstream that open its breaker."""
    breaker_reset: float = 30.0
    """Seconds a breaker stays open before one probe request is let through."""


class Router:
    """Picks, tries and retries the models of a request's chain (see the module's doc).

    :param models: every model served, with its provider.
    :param fallbacks: ``model id -> the models to try after it, in order``.
    :param policy: retries, timeouts and breakers.
    :param events: where ``status`` events go; ``None``: logged only.
    """

    def __init__(
        self,
        models: Mapping[str, tuple[LLMProvider, ModelInfo]],
        fallbacks: Mapping[str, Sequence[str]],
        policy: RoutePolicy,
        *,
        events: EventBus | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.models = models
        self.policy = policy
        self.events = events
        self._sleep = sleep
        self._clock = clock
        self.fallbacks = {model: _unique(model, chain) for model, chain in fallbacks.items()}
        """Each model's fallbacks, in order, without repeats (a chain is never followed
        further: the fallbacks of a fallback are not tried)."""
        shared: dict[str, CircuitBreaker] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        """Each model's circuit breaker: one per upstream (:attr:`ModelInfo.upstream`), so
        models on one upstream share it; a model without one has its own."""
        for model_id, (_, info) in models.items():
            key = f"upstream {info.upstream}" if info.upstream else f"model {model_id}"
            if key not in shared:
                shared[key] = CircuitBreaker(
                    key,
                    failure_threshold=policy.breaker_failures,
                    reset_timeout=policy.breaker_reset,
                    clock=clock,
                    on_change=_log_change,
                )
            self.breakers[model_id] = shared[key]

    def check(self) -> None:
        """:class:`ConfigError` for a fallback chain naming a model no provider serves."""
        known = ", ".join(sorted(self.models)) or "none"
        issues = [
            ConfigIssue(
                path=f"llm.fallbacks.{model}",
                message=f"no provider serves {name!r} (available: {known})",
            )
            for model, chain in sorted(self.fallbacks.items())
            for name in [model, *chain]
            if name not in self.models
        ]
        if issues:
            raise ConfigError(issues)

    def chain(self, model_id: str) -> list[str]:
        """The models tried for a request naming ``model_id``, in order."""
        return [model_id, *self.fallbacks.get(model_id, ())]

    def health(self) -> Health:
        """``degraded`` while a model's breaker is open, naming the models and why."""
        served: dict[CircuitBreaker, list[str]] = {}
        for model_id, breaker in sorted(self.breakers.items()):
            served.setdefault(breaker, []).append(model_id)
        down = [
            f"{', '.join(model_ids)} ({breaker.last_error or 'failing'})"
            for breaker, model_ids in served.items()
            if breaker.state == "open"
        ]
        if not down:
            return Health(detail=f"{len(self.models)} models")
        return Health(status="degraded", detail="upstream failing for " + "; ".join(down))

    def breaker_state(self, model_id: str) -> str:
        """``closed``, ``open`` or ``half_open``: the breaker of ``model_id``'s upstream."""
        breaker = self.breakers.get(model_id)
        return "closed" if breaker is None else breaker.state

    async def run(
        self,
        request: ChatRequest,
        attempt: Callable[[LLMProvider, ChatRequest, float], Awaitable[T]],
    ) -> T:
        """Call ``attempt(provider, request_for_model, seconds)`` for the models of the
        request's chain until one returns; raise the last failure when none does.

        ``attempt`` must bound itself by ``seconds`` (raising :class:`TimeoutError` or a
        :class:`ProviderTimeoutError`) and raise :class:`ProviderError` for a provider's
        failure; any other :class:`HubbubError` (a refusal) ends the request at once."""
        policy = self.policy
        ends = self._clock() + policy.deadline
        chain = self.chain(request.model)
        last: BaseException | None = None
        for index, model_id in enumerate(chain):
            provider, _ = self.models[model_id]
            breaker = self.breakers[model_id]
            routed = request if model_id == request.model else _for_model(request, model_id)
            tries = 0
            while True:
                left = ends - self._clock()
                if left <= 0:
                    raise _deadline_passed(request, policy.deadline, last)
                if not breaker.allow():
                    last = CircuitOpenError(
                        breaker.name, breaker.retry_after(), reason=breaker.last_error or ""
                    )
                    break
                tries += 1
                try:
                    result = await attempt(provider, routed, min(policy.attempt_timeout, left))
                except TimeoutError:
                    exc: BaseException = ProviderTimeoutError(
                        f"model {model_id!r} did not answer within "
                        f"{min(policy.attempt_timeout, left):g} s"
                    )
                except ProviderRequestError as error:
                    breaker.record(None)  # the upstream answered: the request was at fault
                    raise error
                except ProviderError as error:
                    if _request_at_fault(error):
                        breaker.record(None)
                        raise ProviderRequestError(
                            str(error), upstream_status=error.upstream_status
                        ) from error
                    exc = error
                except HubbubError as error:
                    breaker.record(None)  # refused by a layer: the upstream is not to blame
                    raise error
                except Exception as error:
                    exc = ProviderError(
                        f"model {model_id!r} failed: {public_message(error)}",
                        retryable=is_retryable(error),
                    )
                    exc.__cause__ = error
                except BaseException as error:
                    breaker.record(error)  # cancelled: gives back a probe slot
                    raise
                else:
                    breaker.record(None)
                    return result
                breaker.record(exc)
                last = exc
                wait = self._wait(exc, tries)
                if wait is None or self._clock() + wait >= ends:
                    break
                self._status(
                    request,
                    "retrying",
                    f"{model_id}: {exc}; try {tries + 1} of {policy.retries + 1} in {wait:.2f} s",
                )
                await self._sleep(wait)
            if index + 1 < len(chain):
                following = chain[index + 1]
                self._status(request, "fallback", f"{model_id} failed ({last}); trying {following}")
        assert last is not None
        if isinstance(last, CircuitOpenError) and len(chain) > 1:
            raise ProviderError(
                f"no model of {request.model!r}'s fallback chain is available: {last}",
                retryable=True,
            )
        raise last

    def _wait(self, exc: BaseException, tries: int) -> float | None:
        """Seconds to wait before trying the same model again; ``None``: do not."""
        policy = self.policy
        if tries > policy.retries or not is_retryable(exc):
            return None
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float) and asked > 0:
            return float(asked) if asked <= policy.retry_max_delay else None
        ceiling = min(policy.retry_max_delay, policy.retry_delay * 2 ** (tries - 1))
        return random.uniform(0, ceiling)  # jitter, not security

    def _status(self, request: ChatRequest, state: str, detail: str) -> None:
        logger.warning(
            "%s: %s",
            state,
            detail,
            extra={"conversation_id": request.metadata.get("conversation_id")},
        )
        if self.events is not None:
            self.events.publish(
                Status(
                    state=state,
                    detail=detail,
                    owner=request.user,
                    conversation_id=request.metadata.get("conversation_id"),
                )
            )


REQUEST_FAULTS = frozenset({400, 413, 422})
"""Upstream statuses that blame the request itself (unless the context window is what it
exceeds: a fallback may have a larger one)."""


def _request_at_fault(error: ProviderError) -> bool:
    """Whether ``error`` is the upstream refusing the request as such (see
    :class:`ProviderRequestError`)."""
    return error.upstream_status in REQUEST_FAULTS and not isinstance(
        error, ContextWindowExceededError
    )


def _for_model(request: ChatRequest, model_id: str) -> ChatRequest:
    """The same request for another model (a shallow copy: the messages are shared)."""
    return msgspec.structs.replace(request, model=model_id)


def _deadline_passed(
    request: ChatRequest, seconds: float, last: BaseException | None
) -> ProviderTimeoutError:
    why = f" (last failure: {last})" if last is not None else ""
    return ProviderTimeoutError(
        f"no model of {request.model!r}'s chain answered within the {seconds:g} s deadline{why}"
    )


def _unique(model: str, chain: Iterable[str]) -> list[str]:
    seen = {model}
    out = []
    for name in chain:
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def _log_change(old: str, new: str, breaker: CircuitBreaker) -> None:
    log = logger.warning if new == "open" else logger.info
    log("circuit breaker of %s: %s -> %s (%s)", breaker.name, old, new, breaker.last_error)
