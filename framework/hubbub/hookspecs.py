"""The hook specifications: every extension point a hubbub plugin can implement.

A plugin is a module (or object) with functions decorated by :data:`hubbub.hookimpl` whose names
and parameter names match the specs below; it may implement any subset and may omit parameters it
does not need. A misspelled hook name is an error at startup, not a silent no-op.

**The async rule.** pluggy calls hooks synchronously, one plugin at a time; implementations
declared ``wrapper=True`` or ``hookwrapper=True`` are refused at load (register middleware
instead, which wraps async work in a declared order). Registration hooks hand over *factories*;
the objects those factories build do their I/O in ``async`` methods. The lifecycle and interception
hooks (:func:`on_startup`, :func:`on_shutdown`, :func:`before_llm_request`,
:func:`after_llm_response`) may be written as ``async def``: whatever they return is awaited if it
is awaitable, in one place (:func:`hubbub.plugins.maybe_await`).

**Registration hooks** receive a ``register`` callable (a :class:`hubbub.registry.Registrar`)::

    register(name, factory, *, settings=None, description="")

``factory(context)`` receives a :class:`hubbub.registry.ComponentContext` and returns the component;
``settings`` is an optional :class:`msgspec.Struct` type: the ``[plugins.<plugin-name>]`` table of
``hubbub.toml`` is decoded into it (unknown keys are errors) and handed over as
``context.settings``. Two plugins registering the same name for the same kind is an error naming
both. Registration happens once per runtime, so a factory may capture nothing global.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from hubbub.models import ChatRequest, ChatResponse
    from hubbub.registry import Registrar

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("hubbub")
"""Marker for hook specifications (used by hubbub itself)."""
hookimpl = pluggy.HookimplMarker("hubbub")
"""Marker for hook implementations; re-exported as :data:`hubbub.hookimpl`."""


@hookspec
def register_cache_backends(register: Registrar) -> None:
    """Register cache backends (:class:`hubbub.contracts.CacheBackend`).

    Chosen with ``[cache] backend = "<name>"`` and optionally ``fallback = "<name>"``.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.1
    """


@hookspec
def register_memory_stores(register: Registrar) -> None:
    """Register memory stores (:class:`hubbub.contracts.MemoryStore`) that keep conversations
    and messages.

    Chosen with ``[memory] backend = "<name>"`` and optionally ``fallback = "<name>"``.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.1
    """


@hookspec
def register_account_stores(register: Registrar) -> None:
    """Register account stores (:class:`hubbub.contracts.AccountStore`) that keep users, login
    sessions and API keys.

    Chosen with ``[accounts] backend = "<name>"``; unset, the store named like ``[memory]
    backend`` when one is registered, else ``sqlite``. There is no fallback: without its
    account store the server refuses to start rather than forget who may sign in.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.1
    """


@hookspec
def register_auth_methods(register: Registrar) -> None:
    """Register authentication methods (:class:`hubbub.contracts.AuthMethod`).

    Enabled with ``[auth] methods = ["<name>", ...]``; they are tried in that order.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.1
    """


@hookspec
def register_llm_providers(register: Registrar) -> None:
    """Register LLM providers (:class:`hubbub.contracts.LLMProvider`).

    Every registered provider is started unless ``[llm] providers`` lists a subset. Each provider
    announces its models through ``list_models()``; requests are routed by model id.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.1
    """


@hookspec
def register_budget_ledgers(register: Registrar) -> None:
    """Register budget ledgers (:class:`hubbub.contracts.BudgetLedger`): where the tokens and
    cost of LLM calls are reserved before each call and settled after it, for the budgets of
    ``[budgets.user]``, ``[budgets.key]`` and ``[budgets.global]`` and for ``GET /api/usage``.

    Chosen with ``[budgets] backend = "<name>"``; unset, ``redis`` when ``[cache] backend`` is
    ``redis``, else ``memory`` (the built-ins). Processes that should share budgets must share
    the ledger.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.2
    """


@hookspec
def register_llm_middleware(register: Registrar) -> None:
    """Register middleware around every LLM request (:class:`hubbub.contracts.LLMMiddleware`):
    budgets, redaction, tracing, guardrails.

    Every registered middleware runs, in increasing ``priority`` (the lowest is outermost: first
    to see the request, last to see the reply or the failure); equal priorities keep
    registration order. :mod:`hubbub.middleware` has base classes to start from.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.2
    """


@hookspec
def register_tool_middleware(register: Registrar) -> None:
    """Register middleware around every tool call (:class:`hubbub.contracts.ToolMiddleware`):
    approval, argument redaction, auditing, limits.

    Every registered middleware runs, in increasing ``priority`` (the lowest is outermost).

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.2
    """


@hookspec
def register_tools(register: Registrar) -> None:
    """Register tool providers (:class:`hubbub.contracts.ToolProvider`), each offering one or more
    tools. :func:`hubbub.tools.function_tools` turns plain async functions into a provider.

    Every registered provider is started unless ``[tools] providers`` lists a subset.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.1
    """


@hookspec
def register_event_sinks(register: Registrar) -> None:
    """Register event sinks (:class:`hubbub.contracts.EventSink`) that receive every published
    event.

    Enabled with ``[events] sinks = ["<name>", ...]``.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.1
    """


@hookspec
def register_event_logs(register: Registrar) -> None:
    """Register event logs (:class:`hubbub.contracts.EventLog`): where published events are kept
    in order and read back from, by every process sharing one.

    Selected with ``[events] backend = "<name>"``; the built-ins are ``memory`` and ``redis``.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.2
    """


@hookspec
def register_routes(register: Registrar) -> None:
    """Register HTTP routes for the reference server.

    The factory receives the :class:`hubbub.registry.ComponentContext` (with ``context.runtime``
    set) and returns a list of Litestar route handlers or routers, mounted as they are. Routes
    appear in the OpenAPI schema like the built-in ones. Every route requires a caller (401
    without acceptable credentials) unless it is declared public with ``opt={"public": True}``;
    a handler receives the caller through the ``principal`` dependency.

    :param register: ``register(name, factory, *, settings=None, description="")``.

    .. versionadded:: 0.1
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``hubbub`` command line.

    A plugin that fails here is reported and skipped: the other commands keep working.

    :param cli: the root :class:`click.Group`; use ``@cli.command()`` or ``cli.add_command()``.

    .. versionadded:: 0.1
    """


@hookspec
def on_startup(runtime: Any) -> Any:
    """Called once after every component has started, before the runtime is used.

    May be ``async``. Raising aborts startup (the components are stopped again) with an error
    naming the plugin.

    :param runtime: the started :class:`hubbub.runtime.Runtime`.

    .. versionadded:: 0.1
    """


@hookspec
def on_shutdown(runtime: Any) -> Any:
    """Called once when the runtime begins to stop, while every component still works.

    May be ``async``. Exceptions are logged; shutdown continues.

    :param runtime: the stopping :class:`hubbub.runtime.Runtime`.

    .. versionadded:: 0.1
    """


@hookspec
def check_new_password(password: str, user: str) -> Any:
    """Judge a password about to be set for ``user`` (``hubbub users add``, ``users passwd``),
    after hubbub's length policy passed: return a reason to refuse it (``"it appears in a
    known data breach"``), shown to whoever chose it, or ``None`` to let it through. The
    place for a breached-password check (a local copy of a breach corpus: the server is
    expected to work offline) or a house rule.

    May be ``async`` (a check that reads files should be, or run them off the event loop).
    Every implementation is asked in turn until one refuses; never called at login.

    :param password: the new password, in clear: never log or store it.
    :param user: the account's name.

    .. versionadded:: 0.1
    """


@hookspec
def before_llm_request(request: ChatRequest, runtime: Any) -> Any:
    """Intercept every LLM request before it reaches the provider.

    Change ``request`` in place (add a system message, redact text, lower ``max_tokens``...) or
    raise a :class:`hubbub.errors.HubbubError` to refuse it. May be ``async``. Implementations run
    in pluggy's order (declare ``tryfirst``/``trylast`` when order matters), together as one
    middleware of priority 0 (see :func:`register_llm_middleware`); the provider is chosen after
    them, so they may change the model.

    :param request: the :class:`hubbub.models.ChatRequest` about to be sent.
    :param runtime: the running :class:`hubbub.runtime.Runtime`.

    .. versionadded:: 0.1
    """


@hookspec
def after_llm_response(request: ChatRequest, response: ChatResponse, runtime: Any) -> Any:
    """Observe every completed LLM reply (streamed replies once they are complete).

    Useful for accounting, auditing and metrics. May be ``async``. Exceptions are logged and do
    not affect the caller, who already has the reply.

    :param request: the request as it was sent.
    :param response: the whole :class:`hubbub.models.ChatResponse`, with ``usage``.
    :param runtime: the running :class:`hubbub.runtime.Runtime`.

    .. versionadded:: 0.1
    """
