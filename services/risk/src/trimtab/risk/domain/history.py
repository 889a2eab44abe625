"""The reference price history that scenarios are replayed from, and what it implies. Pure.

A `ReferenceHistory` holds daily closes of some securities (NaN before a listing), a market
index, and optional factor ETFs, on one calendar. From it come:
- a date window (the close on or before each end: a scenario that starts on a holiday starts at
  the previous close),
- market betas (OLS of daily log returns on the index's, over the last `BETA_DAYS` days),
- factor loadings on long-short factors: the market, and each factor ETF *in excess of the
  market* (momentum = MTUM - market, ...), since the long-only ETFs move mostly with the market
  and regressing on them directly would be ill-conditioned.
Symbols the history does not hold are reported as unknown; callers proxy them and say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np

MARKET = "market"
BETA_DAYS = 756  # three years of trading days


@dataclass(frozen=True)
class ReferenceHistory:
    dates: np.ndarray  # datetime64[D], ascending
    symbols: tuple[str, ...]
    prices: np.ndarray  # (T x n), NaN where not listed
    market: np.ndarray  # (T,) index level
    market_name: str = "SP500"
    factor_names: tuple[str, ...] = ()
    factor_prices: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (T x f), NaN outside
    sectors: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.prices.shape != (len(self.dates), len(self.symbols)):
            raise ValueError("prices must be (dates x symbols)")
        if self.market.shape != (len(self.dates),):
            raise ValueError("market must have one level per date")

    @property
    def first_day(self) -> date:
        return self.dates[0].astype(object)  # type: ignore[no-any-return]

    @property
    def last_day(self) -> date:
        return self.dates[-1].astype(object)  # type: ignore[no-any-return]

    def column(self, symbol: str) -> int | None:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            return None

    def window(self, start: date, end: date) -> tuple[int, int]:
        """Row indices of the closes on or before `start` and `end` (inclusive range)."""
        if end <= start:
            raise ValueError("a scenario window must end after it starts")
        i0 = int(np.searchsorted(self.dates, np.datetime64(start, "D"), side="right")) - 1
        i1 = int(np.searchsorted(self.dates, np.datetime64(end, "D"), side="right")) - 1
        if i0 < 0 or i1 <= i0:
            raise ValueError(f"the history ({self.first_day}..{self.last_day}) does not cover "
                             f"{start}..{end}")
        return i0, i1

    def log_returns(self) -> np.ndarray:
        return np.diff(np.log(self.prices), axis=0)

    def betas(self, symbols: Sequence[str], days: int = BETA_DAYS) -> tuple[np.ndarray, np.ndarray]:
        """(betas, known) of `symbols` against the market over the last `days` returns."""
        rm = np.diff(np.log(self.market))[-days:]
        out, known = np.ones(len(symbols)), np.zeros(len(symbols), dtype=bool)
        for k, s in enumerate(symbols):
            c = self.column(s)
            if c is None:
                continue
            ri = np.diff(np.log(self.prices[:, c]))[-days:]
            ok = np.isfinite(ri) & np.isfinite(rm)
            if ok.sum() < 60:
                continue
            x = rm[ok] - rm[ok].mean()
            out[k] = float(x @ (ri[ok] - ri[ok].mean()) / (x @ x))
            known[k] = True
        return out, known

    def factor_returns(self) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """(names, rows, (rows x 1+f) daily simple returns of market and ETF-minus-market)."""
        names = (MARKET, *self.factor_names)
        if not self.factor_names:
            return names, np.arange(1, len(self.dates)), np.diff(self.market)[:, None] / self.market[:-1, None]
        rm = self.market[1:] / self.market[:-1] - 1.0
        re = self.factor_prices[1:] / self.factor_prices[:-1] - 1.0
        rows = np.flatnonzero(np.isfinite(re).all(axis=1)) + 1
        f = np.column_stack([rm, re - rm[:, None]])[rows - 1]
        return names, rows, f

    def factor_loadings(self, symbols: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """(factor names, (n x factors) OLS loadings, known) over the factor ETFs' history."""
        names, rows, f = self.factor_returns()
        x = np.column_stack([np.ones(len(f)), f])
        out = np.zeros((len(symbols), len(names)))
        out[:, 0] = 1.0  # the proxy for a symbol the history lacks: market beta 1, no tilts
        known = np.zeros(len(symbols), dtype=bool)
        for k, s in enumerate(symbols):
            c = self.column(s)
            if c is None:
                continue
            p = self.prices[:, c]
            y = p[rows] / p[rows - 1] - 1.0
            ok = np.isfinite(y)
            if ok.sum() < 60:
                continue
            coef, *_ = np.linalg.lstsq(x[ok], y[ok], rcond=None)
            out[k] = coef[1:]
            known[k] = True
        return names, out, known
