"""The built-in calculator, current_time and convert_time tools."""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.errors import ToolError
from hubbub_plugins import basic_tools


async def calculator(expression: str) -> str:
    """The calculator's answer, or ``error: <why>`` when it refuses (a tool error)."""
    try:
        return await basic_tools.calculator(expression)
    except ToolError as exc:
        return f"error: {exc}"


async def current_time(timezone: str) -> str:
    try:
        return await basic_tools.current_time(timezone)
    except ToolError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("2 * (3 + 4) / 5", "2.8"),
        ("-(3**2)", "-9"),
        ("7 // 2 + 7 % 2", "4"),
        ("2**100", str(2**100)),
    ],
)
async def test_arithmetic(expression: str, result: str) -> None:
    assert await calculator(expression) == result


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("(9**9999)**3000", "larger than"),  # would take minutes on the event loop
        ("(2**5000)*(2**5000)*(2**5000)", "larger than"),
        ("2**100000", "exponent larger"),
        ("1.5**10000", "out of range"),
        ("10/0", "division by zero"),
        ("__import__('os')", "unsupported"),
        ("1 +", "invalid syntax"),
        ("1" * 600, "longer than"),
    ],
)
async def test_refusals_are_explained(expression: str, message: str) -> None:
    answer = await calculator(expression)
    assert answer.startswith("error: ")
    assert message in answer


async def test_current_time_in_a_zone() -> None:
    stamp = datetime.datetime.fromisoformat(await current_time("Europe/Paris"))
    assert stamp.utcoffset() in (datetime.timedelta(hours=1), datetime.timedelta(hours=2))
    assert (await current_time("Mars/Olympus")).startswith("error: unknown time zone")


# -- real numbers only -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    ["(-8)**0.5", "(-8)**0.5 // 1", "(-1)**0.5 * 0", "(-8) ** (1/3) + 1", "(-2.5)**-0.5"],
)
async def test_complex_results_are_refused_clearly(expression: str) -> None:
    # (-8)**0.5 is complex in Python: the calculator used to print it, and what followed it
    # (// 1, a comparison) failed with a TypeError.
    answer = await calculator(expression)
    assert answer == (
        "error: the result is not a real number (a negative number to a fractional power)"
    )


@pytest.mark.parametrize(
    ("expression", "result"),
    [("-8**0.5", "-2.8284271247461903"), ("(-2)**3", "-8"), ("(-8)**2.0", "64.0")],
)
async def test_negative_numbers_with_real_results_still_work(expression: str, result: str) -> None:
    assert await calculator(expression) == result


@pytest.mark.parametrize("expression", ["1e308*10", "1e308*10 - 1e308*10", "1e308/1e-308"])
async def test_infinite_results_are_out_of_range(expression: str) -> None:
    assert await calculator(expression) == "error: result out of range"


NUMBER = st.one_of(
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
).map(lambda n: f"({n!r})")
EXPRESSION = st.recursive(
    NUMBER,
    lambda inner: st.tuples(
        inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), inner
    ).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    max_leaves=6,
)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(expression=EXPRESSION)
async def test_any_arithmetic_is_a_real_number_or_an_error(expression: str) -> None:
    answer = await calculator(expression)
    if answer.startswith("error: "):
        assert "Traceback" not in answer
        return
    try:
        int(answer)  # an integer, however large
    except ValueError:
        value = float(answer)  # else a real number, printed as one (no "j", "inf" or "nan")
        assert math.isfinite(value), answer


@pytest.mark.parametrize(
    ("time", "source", "target", "expected"),
    [
        ("2026-07-01T12:00", "Europe/Paris", "UTC", "2026-07-01T10:00:00+00:00"),
        ("2026-01-15T09:30", "America/New_York", "Asia/Tokyo", "2026-01-15T23:30:00+09:00"),
    ],
)
async def test_convert_time_between_zones(
    time: str, source: str, target: str, expected: str
) -> None:
    assert await basic_tools.convert_time(time, source, target) == expected


async def test_convert_time_of_day_uses_today() -> None:
    answer = datetime.datetime.fromisoformat(
        await basic_tools.convert_time("12:00", "UTC", "Asia/Kolkata")
    )
    assert (answer.hour, answer.minute) == (17, 30)


@pytest.mark.parametrize(
    ("time", "source", "message"),
    [
        ("noon", "UTC", "cannot read the time 'noon'"),
        ("2026-01-01T00:00+02:00", "UTC", "without an offset"),
        ("12:00", "Mars/Base", "unknown time zone 'Mars/Base'"),
    ],
)
async def test_convert_time_refusals_are_tool_errors(time: str, source: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        await basic_tools.convert_time(time, source, "UTC")
