"""Exact US dollars as integers, for ledgers that count in integers (Redis ``HINCRBY``).

A cost is kept in nanodollars (10⁻⁹ USD): per-token prices have at most a few significant
digits below a millionth of a dollar, so sums stay exact. A reservation rounds up (never holds
less than it may cost); what is too small to show is rounded up too, so spending is never
under-counted.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

__all__ = ["NANOS", "from_nanos", "to_nanos"]

NANOS = Decimal(10) ** 9
"""Nanodollars in a dollar."""


def to_nanos(dollars: Decimal) -> int:
    """``dollars`` in whole nanodollars, rounded up."""
    return int((dollars * NANOS).to_integral_value(rounding=ROUND_CEILING))


def from_nanos(nanos: int) -> Decimal:
    """``nanos`` nanodollars in dollars, exactly (trailing zeros removed)."""
    value = Decimal(nanos) / NANOS
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()
