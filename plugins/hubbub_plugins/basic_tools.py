"""Tool provider ``basic``: small, safe tools that work offline.

* ``basic.current_time``: the current date and time, in UTC or a named IANA time zone.
* ``basic.convert_time``: a wall-clock time in one IANA time zone, in another.
* ``basic.calculator``: evaluates an arithmetic expression (numbers, ``+ - * / // % **`` and
  parentheses only; no names, no calls) over real numbers: a result that would be complex
  (``(-8) ** 0.5``), infinite or too large is refused with a message the model can read.
"""

from __future__ import annotations

import ast
import datetime
import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hubbub import hookimpl
from hubbub.errors import ToolError
from hubbub.tools import function_tools

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar
    from hubbub.tools import StaticToolProvider

_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
MAX_EXPONENT = 10_000
MAX_BITS = 10_000
"""Largest integer result (in bits): big-integer arithmetic runs on the event loop, where no
timeout can interrupt it, so results are bounded before they are computed."""
MAX_LENGTH = 500


def _bits(value: float | int) -> int:
    return abs(int(value)).bit_length() if isinstance(value, int) else 64


def _check_size(op: ast.operator, left: float | int, right: float | int) -> None:
    if isinstance(op, ast.Pow) and abs(right) > MAX_EXPONENT:
        raise ValueError(f"exponent larger than {MAX_EXPONENT}")
    estimate = 0  # an upper bound of the integer result's size, in bits
    if isinstance(left, int) and isinstance(right, int):
        if isinstance(op, ast.Pow) and right > 0:
            estimate = _bits(left) * right
        elif isinstance(op, ast.Mult):
            estimate = _bits(left) + _bits(right)
    if estimate > MAX_BITS:
        raise ValueError(f"result larger than {MAX_BITS} bits")


def _real(value: Any) -> float | int:
    """``value`` if it is a finite real number; else the reason it is refused."""
    if isinstance(value, complex):
        raise ValueError(
            "the result is not a real number (a negative number to a fractional power)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise OverflowError
    return value  # type: ignore[no-any-return]


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _real(_OPERATORS[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        _check_size(node.op, left, right)
        return _real(_OPERATORS[type(node.op)](left, right))
    raise ValueError(f"unsupported expression element: {type(node).__name__}")


async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "2 * (3 + 4) / 5". Supports + - * / // % **
    and parentheses."""
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"expression longer than {MAX_LENGTH} characters")
    try:
        return str(_evaluate(ast.parse(expression, mode="eval")))
    except OverflowError:
        raise ToolError("result out of range") from None
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        raise ToolError(str(exc)) from None


def _zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or a :class:`ToolError` the model can act on."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a key naming a directory of the zone database ("Europe"), or too long a
        # name; its message would show where the database is installed.
        shown = name if len(name) <= 64 else name[:64] + "..."
        raise ToolError(
            f"unknown time zone {shown!r} (expected a name such as 'Europe/Paris')"
        ) from None


async def current_time(timezone: str = "UTC") -> str:
    """The current date and time in ISO 8601, in the given IANA time zone (default UTC)."""
    return datetime.datetime.now(_zone(timezone)).isoformat(timespec="seconds")


async def convert_time(time: str, from_timezone: str, to_timezone: str) -> str:
    """Convert a time of day ("14:30", today's date) or a date and time ("2026-03-29T01:30")
    from one IANA time zone to another; answers in ISO 8601."""
    source, target = _zone(from_timezone), _zone(to_timezone)
    try:
        if len(time) <= 8 and ":" in time:
            clock = datetime.time.fromisoformat(time)
            moment = datetime.datetime.combine(datetime.datetime.now(source).date(), clock)
        else:
            moment = datetime.datetime.fromisoformat(time[:64])
    except ValueError:
        raise ToolError(
            f"cannot read the time {time[:64]!r} (expected '14:30' or '2026-03-29T01:30')"
        ) from None
    if moment.tzinfo is not None:
        raise ToolError("give the time without an offset: from_timezone says where it is")
    return moment.replace(tzinfo=source).astimezone(target).isoformat(timespec="seconds")


@hookimpl
def register_tools(register: Registrar) -> None:
    def build(context: ComponentContext[None]) -> StaticToolProvider:
        return function_tools(calculator, current_time, convert_time)

    register("basic", build, description="calculator, current_time and convert_time")
