"""A tenant's daily closes and trading calendar, and the log returns they imply. Pure, no I/O.

A tick's day is the date of its `as_of` as the producer stated it (the same rule market-data uses
for its price history); the last tick of a day (latest `as_of`, ties: the later arrival) is that
day's close. The calendar is the set of days on which any symbol ticked. The newest day is *open*
(its closes may still change); every earlier day is *complete*. A symbol's return on day d is
`log(close_d / close_prev)` where prev is the calendar day before d; a symbol without a close on
either day has no return that day (see `ewma.py` for how that is treated).
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np


class TickEffect(enum.Enum):
    #: older than the close already held for that symbol and day: nothing changes
    IGNORED = "ignored"
    #: sets a close of the open day: the model's inputs (complete days) do not change
    OPEN_DAY = "open_day"
    #: a day later than the open day: the open day is now complete
    NEW_DAY = "new_day"
    #: touches a complete day (or inserts a day before the open one): the model must be rebuilt
    CORRECTION = "correction"


@dataclass(frozen=True)
class Close:
    price_usd: float
    as_of: datetime


class PriceBook:
    """Daily closes of one tenant, by day then symbol."""

    def __init__(self) -> None:
        self._closes: dict[date, dict[str, Close]] = {}
        self._days: list[date] = []
        self._symbols: set[str] = set()

    def symbols(self) -> list[str]:
        return sorted(self._symbols)

    @property
    def days(self) -> list[date]:
        return list(self._days)

    @property
    def open_day(self) -> date | None:
        return self._days[-1] if self._days else None

    @property
    def complete_days(self) -> list[date]:
        return self._days[:-1]

    def close(self, symbol: str, day: date) -> Close | None:
        return self._closes.get(day, {}).get(symbol)

    def record(self, symbol: str, day: date, price_usd: float, as_of: datetime) -> TickEffect:
        if not (price_usd > 0 and math.isfinite(price_usd)):
            raise ValueError(f"a close must be a positive finite price, got {price_usd}")
        held = self._closes.get(day, {}).get(symbol)
        if held is not None and as_of < held.as_of:
            return TickEffect.IGNORED
        opened = self.open_day
        if day not in self._closes:
            self._closes[day] = {}
            bisect.insort(self._days, day)
        self._closes[day][symbol] = Close(price_usd, as_of)
        self._symbols.add(symbol)
        if opened is None or day == opened:
            return TickEffect.OPEN_DAY
        return TickEffect.NEW_DAY if day > opened else TickEffect.CORRECTION

    def load(self, rows: Iterable[tuple[str, date, float, datetime]]) -> None:
        """Bulk-load stored closes (symbol, day, price, as_of), e.g. at start-up."""
        for symbol, day, price, as_of in rows:
            self.record(symbol, day, price, as_of)

    def returns_on(self, day: date) -> dict[str, float]:
        """Log returns into `day` from the calendar day before it, for symbols with both closes."""
        i = bisect.bisect_left(self._days, day)
        if i == 0 or i >= len(self._days) or self._days[i] != day:
            return {}
        today, before = self._closes[day], self._closes[self._days[i - 1]]
        return {
            s: math.log(c.price_usd / before[s].price_usd)
            for s, c in sorted(today.items()) if s in before
        }

    def return_days(self) -> list[date]:
        """Complete days that have at least one return (the model's observations)."""
        out = []
        for prev, day in zip(self._days, self._days[1:-1], strict=False):
            if self._closes[day].keys() & self._closes[prev].keys():
                out.append(day)
        return out

    def return_panel(self) -> tuple[list[str], list[date], np.ndarray]:
        """(symbols, days, days x symbols log returns with NaN where missing) of complete days."""
        symbols = sorted({s for day in self.complete_days for s in self._closes[day]})
        col = {s: k for k, s in enumerate(symbols)}
        days = self.return_days()
        panel = np.full((len(days), len(symbols)), np.nan)
        for t, day in enumerate(days):
            for s, r in self.returns_on(day).items():
                panel[t, col[s]] = r
        return symbols, days, panel

    def closes_on(self, day: date) -> dict[str, float]:
        return {s: c.price_usd for s, c in self._closes.get(day, {}).items()}

    def latest_closes(self, symbols: Iterable[str], up_to: date) -> dict[str, float]:
        """Each symbol's latest close on or before `up_to` (symbols never closed are left out)."""
        wanted, out = set(symbols), {}
        for day in reversed(self._days[:bisect.bisect_right(self._days, up_to)]):
            for s in wanted & self._closes[day].keys():
                out[s] = self._closes[day][s].price_usd
            wanted -= out.keys()
            if not wanted:
                break
        return out
