"""Structured logging with context.

:func:`log_context` binds fields (``request_id``, ``conversation_id``, ``plugin``, ...) for the
current task; every record logged inside it carries them, in text (``key=value`` after the
message) or JSON (one object per line) as ``[logging] format`` chooses. Fields passed with
``extra={...}`` are included the same way.

:func:`configure_logging` makes hubbub's handler the one way out for every logger of the process,
uvicorn's included, so a JSON stream stays JSON. What other libraries attach to records is
rendered only when it is data: a value whose text would be an object's address (litellm's
``litellm_redacted`` sentinel, for one) is left out, other values are written as JSON values or
their text. Terminal colour codes are removed from messages, and records whose message is blank
(spacer lines some libraries log) are dropped.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "bind_context",
    "configure_logging",
    "current_context",
    "log_context",
    "unbind_context",
]

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "hubbub_log_context",
    default={},  # noqa: B039 - never mutated, only replaced
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "hubbub_context",
    "hubbub_message",
    "color_message",  # uvicorn's coloured duplicate
}

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Terminal colour and cursor codes, which some libraries put in their messages."""

_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
"""uvicorn's loggers: its default configuration gives them their own plain-text handlers."""

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_DROP = object()
"""What :func:`_field_value` returns for a value that is not worth rendering."""


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged in this block (and tasks it starts)."""
    token = bind_context(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def bind_context(**fields: Any) -> contextvars.Token[dict[str, Any]]:
    """:func:`log_context` without the ``with`` block, for hot paths: pass the token to
    :func:`unbind_context` when done."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind_context(token: contextvars.Token[dict[str, Any]]) -> None:
    """Undo a :func:`bind_context`."""
    _context.reset(token)


def current_context() -> dict[str, Any]:
    """The fields bound by enclosing :func:`log_context` blocks."""
    return dict(_context.get())


def _field_value(value: Any, depth: int = 0) -> Any:
    """``value`` as something a log line can show: JSON scalars, lists and string-keyed tables
    of them as they are, other objects as their text, and :data:`_DROP` for an object whose
    text would only be its address (a sentinel another library attached to the record)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        items = (_field_value(item, depth + 1) for item in value)
        return [item for item in items if item is not _DROP]
    if depth < 4 and isinstance(value, Mapping):
        pairs = ((str(k), _field_value(v, depth + 1)) for k, v in value.items())
        return {k: v for k, v in pairs if v is not _DROP}
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not break logging
        return _DROP
    return _DROP if text == object.__repr__(value) else text


def _clean_message(record: logging.LogRecord) -> str:
    """The record's message without terminal colour codes or surrounding blank lines (worked
    out once, by :class:`ContextFilter`, and kept on the record)."""
    message = getattr(record, "hubbub_message", None)
    if message is None:
        message = _ANSI.sub("", record.getMessage()).strip()
        record.hubbub_message = message
    return str(message)


class ContextFilter(logging.Filter):
    """Attach the bound context and ``extra`` fields to each record as ``hubbub_context``
    (values that are not data are left out, see :func:`_field_value`), and drop records with
    nothing to say (a blank message and no exception)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if not record.exc_info and not _clean_message(record):
                return False
        except Exception:  # a message that cannot be formatted: let the handler report it
            pass
        fields: dict[str, Any] = {}
        items = [*_context.get().items()]
        items += [
            (key, value)
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        ]
        for key, value in items:
            shown = _field_value(value)
            if shown is not _DROP:
                fields[key] = shown
        record.hubbub_context = fields
        return True


class TextFormatter(logging.Formatter):
    """``2026-01-01T12:00:00.123Z INFO hubbub.runtime: message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        text = f"{stamp}.{int(record.msecs):03d}Z {record.levelname} {record.name}: "
        text += _clean_message(record)
        fields = getattr(record, "hubbub_context", {})
        if fields:
            text += " " + " ".join(f"{k}={_short(v)}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, context fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": _clean_message(record),
            **getattr(record, "hubbub_context", {}),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(data, enc_hook=str).decode()


def _short(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if " " in text else text


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every log record of the process to stderr through one handler in the chosen format.

    :param level: the lowest level logged, in any case (``debug`` or ``DEBUG``).
    :param fmt: ``text`` or ``json``.

    uvicorn's loggers lose the handlers its default configuration gives them and propagate
    here, so their lines share the format (call this in every worker process too).
    """
    name = level.strip().upper()
    if name not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}")
    for logger_name in _UVICORN_LOGGERS:
        foreign = logging.getLogger(logger_name)
        foreign.handlers.clear()
        foreign.propagate = True
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_hubbub", False):
            root.removeHandler(existing)
    handler._hubbub = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(name)
