"""Money at the edges: the JSON form of a Decimal is its fixed-point digits, whatever path
computes it (every event and canonical hash depends on the exact string)."""

from __future__ import annotations

import decimal
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from trimtab.shared.money import fixed_point

SPECIAL = ["0", "-0", "0.000", "-0.00", "1E+2", "1e-7", "0.000001", "0.0000001", "123456789012345678901234567890",
           "1.5E+30", "-2.50E-12", "Infinity", "-Infinity", "NaN", "-NaN", "sNaN", "NaN123", "100", "1.00E+3",
           "0.1234567890123456789", "9.99E-7", "1E-6", "12.3400"]


def test_the_special_cases_are_format_f() -> None:
    for text in SPECIAL:
        d = Decimal(text)
        assert fixed_point(d) == format(d, "f"), text


@given(sign=st.integers(0, 1), digits=st.lists(st.integers(0, 9), min_size=1, max_size=40),
       exponent=st.integers(-40, 40))
def test_any_finite_decimal_is_format_f(sign: int, digits: list[int], exponent: int) -> None:
    d = Decimal((sign, tuple(digits), exponent))
    assert fixed_point(d) == format(d, "f")


def test_a_context_that_prints_a_small_e_still_gives_format_f() -> None:
    with decimal.localcontext() as ctx:
        ctx.capitals = 0
        for text in ("1E+2", "1e-9", "2.5E-7"):
            d = Decimal(text)
            assert fixed_point(d) == format(d, "f")
