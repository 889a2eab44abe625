"""Money and quantities at the edges: Decimal, never binary floats.

Inside the optimizer numbers are floats (a solver needs them); everything that crosses an API or
an event is a Decimal string, and money is rounded to cents with banker's rounding only at the
edge where it is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated

from pydantic import PlainSerializer

CENT = Decimal("0.01")


def to_cents(usd: Decimal) -> int:
    """Dollars to integer cents, rounding half to even."""
    return int((usd / CENT).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) * CENT).quantize(CENT)


def usd(value: Decimal | float | int | str) -> Decimal:
    """A dollar amount rounded to cents. Floats go through repr so 0.1 stays 0.1."""
    if type(value) is not Decimal:
        value = Decimal(repr(value) if isinstance(value, float) else value)
    return value.quantize(CENT, ROUND_HALF_EVEN)


#: 10^-places by places, for `dec` (quantize reads only the exponent).
_PLACES = {places: Decimal(1).scaleb(-places) for places in range(13)}


def _quantum(places: int) -> Decimal:
    quantum = _PLACES.get(places) if type(places) is int else None
    return Decimal(1).scaleb(-places) if quantum is None else quantum


def dec(value: float, places: int = 6) -> Decimal:
    """A float from a computation turned into a Decimal with a fixed number of places."""
    return Decimal(repr(float(value))).quantize(_quantum(places), ROUND_HALF_EVEN)


def decs(values: Iterable[float], places: int = 6) -> list[Decimal]:
    """`dec` of each of `values`, in one call (a vector's worth of them)."""
    quantum = _quantum(places)
    return [Decimal(repr(float(v))).quantize(quantum, ROUND_HALF_EVEN) for v in values]


def fixed_point(d: Decimal) -> str:
    """`format(d, "f")`: the Decimal's digits without an exponent. `str(d)` is the same string
    whenever it shows no exponent (a number within about 1e-6 and its last digit's place, which is
    every price, share count and weight here) and costs a quarter as much; this runs for every
    Decimal of every event and hash."""
    s = str(d)
    return format(d, "f") if "E" in s or "e" in s else s


#: A Decimal serialized as a JSON string, so no consumer parses money into a float by accident.
DecimalStr = Annotated[Decimal, PlainSerializer(fixed_point, return_type=str, when_used="json")]
