"""Bounds shared by the optimizer library and the services that feed it, in a module light enough
for any process to import (the optimizer's API process does not load the solver stack).

Each is far beyond any real account or market and well inside what a solve handles; input past
them is refused where it comes in (a 422), not by the v1 event models (events already recorded
must keep validating as they did)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator

#: Largest daily volatility (1,000 % a day) and average daily traded value (USD) of a security.
MAX_SIGMA_DAILY = 10.0
MAX_ADV_USD = 1e15
#: Largest price of one share, USD, a price tick or a fill may carry (the dearest listed share
#: trades below $1 million). An account holds at most 10^10 shares (the drift monitor's bound), so
#: its value stays below 10^17 + cash, what drifts.total_value_usd NUMERIC(20,2) holds. Before
#: this bound was shared, market-data accepted ticks up to 10^12: one above about 10^8 on an
#: account at the share bound overflowed that column, and every drift decision of the symbol's
#: accounts failed with it.
MAX_PRICE_USD = Decimal("10000000")
#: The years a snapshot's `as_of` may fall in (its own calendar date): a year-1 or year-9999
#: snapshot is no market's, and the wash-sale window's date arithmetic overflows at the edges.
TRADE_YEARS = (1900, 2200)


def trade_year_problem(year: int) -> str | None:
    """Why a snapshot dated in `year` is refused, or None."""
    if TRADE_YEARS[0] <= year <= TRADE_YEARS[1]:
        return None
    return f"is outside the years {TRADE_YEARS[0]} to {TRADE_YEARS[1]}"

#: A stored latest price dated further ahead than this is not a real one (a tick from the future,
#: accepted before market-data refused them): a real tick replaces it instead of being ignored.
FUTURE_PRICE_HORIZON_S = 86_400.0


def _iso_date_only(value: object) -> object:
    """A date in a request is an ISO string (or already a date): pydantic's lax mode also reads a
    number as days since 1970, so `"start": 0` meant 1 Jan 1970 (found by fuzzing: a replay from
    1970 was started)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError("a date is an ISO 8601 string (YYYY-MM-DD), not a number")
    return value


#: A request's date: ISO 8601 only (`IsoDate | None` where optional).
IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]
