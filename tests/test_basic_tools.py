"""The built-in calculator and current_time tools."""

from __future__ import annotations

import datetime

import pytest

from hubbub_plugins.basic_tools import calculator, current_time


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
