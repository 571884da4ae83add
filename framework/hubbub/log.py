"""Structured logging with context.

:func:`log_context` binds fields (``request_id``, ``conversation_id``, ``plugin``, ...) for the
current task; every record logged inside it carries them, in text (``key=value`` after the
message) or JSON (one object per line) as ``[logging] format`` chooses. Fields passed with
``extra={...}`` are included the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator
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
    "color_message",  # uvicorn's coloured duplicate
}


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


class ContextFilter(logging.Filter):
    """Attach the bound context and ``extra`` fields to each record as ``hubbub_context``."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(_context.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                fields[key] = value
        record.hubbub_context = fields
        return True


class TextFormatter(logging.Formatter):
    """``2026-01-01T12:00:00.123Z INFO hubbub.runtime: message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        text = f"{stamp}.{int(record.msecs):03d}Z {record.levelname} {record.name}: "
        text += record.getMessage()
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
            "message": record.getMessage(),
            **getattr(record, "hubbub_context", {}),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(data, enc_hook=str).decode()


def _short(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if " " in text else text


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send hubbub's logs (and the root logger's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_hubbub", False):
            root.removeHandler(existing)
    handler._hubbub = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
