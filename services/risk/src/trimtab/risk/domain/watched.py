"""The latest known portfolio of every watched account of one tenant, valued at the daily closes,
with its running peak. Pure numpy; accounts are rows of one matrix, so a completed day values
every account in one pass.

An account's portfolio is held as units (shares) per symbol plus cash, as its latest assessed
proposal's snapshot stated them (the holdings before the proposed trades: a proposal is not a
trade). A symbol is valued at its latest close up to the day; before its first close, at the
snapshot's price (`ref_prices`), so a symbol without ticks holds its value. The running peak
counts from the day the portfolio became known (`since`): its value then, and every completed
day after.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np


class WatchedBook:
    def __init__(self) -> None:
        self.accounts: list[str] = []
        self._row: dict[str, int] = {}
        self.symbols: list[str] = []
        self._col: dict[str, int] = {}
        self.units = np.zeros((0, 0))
        self.ref_prices = np.zeros((0, 0))  # NaN where the snapshot gave no price
        self.cash = np.zeros(0)
        self.peak = np.zeros(0)
        self.since: list[date | None] = []
        self.last_close = np.zeros(0)  # per symbol, NaN before its first close
        self.last_day: date | None = None

    def __len__(self) -> int:
        return len(self.accounts)

    def _ensure_symbols(self, symbols: list[str]) -> None:
        new = [s for s in sorted(set(symbols)) if s not in self._col]
        if not new:
            return
        for s in new:
            self._col[s] = len(self.symbols)
            self.symbols.append(s)
        pad = len(new)
        self.units = np.pad(self.units, ((0, 0), (0, pad)))
        self.ref_prices = np.pad(self.ref_prices, ((0, 0), (0, pad)), constant_values=np.nan)
        self.last_close = np.concatenate([self.last_close, np.full(pad, np.nan)])

    def set_portfolio(self, account: str, units: Mapping[str, float], cash_usd: float,
                      ref_prices: Mapping[str, float], since: date | None,
                      closes: Mapping[str, float] | None = None, restart_peak: bool = True) -> None:
        """Replace (or add) an account's portfolio; its peak restarts at today's value (or at 0
        when loading, to be rebuilt by replaying the days since `since`). `closes` are the
        latest closes known for its symbols (to start valuing them)."""
        self._ensure_symbols([*units, *ref_prices])
        for s, p in (closes or {}).items():
            if s in self._col and np.isnan(self.last_close[self._col[s]]):
                self.last_close[self._col[s]] = p
        if account not in self._row:
            self._row[account] = len(self.accounts)
            self.accounts.append(account)
            n = len(self.symbols)
            self.units = np.vstack([self.units, np.zeros((1, n))])
            self.ref_prices = np.vstack([self.ref_prices, np.full((1, n), np.nan)])
            self.cash = np.append(self.cash, 0.0)
            self.peak = np.append(self.peak, 0.0)
            self.since.append(None)
        i = self._row[account]
        self.units[i] = 0.0
        self.ref_prices[i] = np.nan
        for s, u in units.items():
            self.units[i, self._col[s]] = u
        for s, p in ref_prices.items():
            self.ref_prices[i, self._col[s]] = p
        self.cash[i] = cash_usd
        self.since[i] = since
        self.peak[i] = self.values()[i] if restart_peak else 0.0

    def load(self, portfolios: list[tuple[str, Mapping[str, float], float, Mapping[str, float],
                                          date | None]]) -> None:
        """Bulk-load (account, units, cash, ref_prices, since) with peaks at 0, to be rebuilt by
        replaying the days since (`set_portfolio` one by one would copy the matrix per row)."""
        self._ensure_symbols([s for _, u, _, r, _ in portfolios for s in (*u, *r)])
        new = [p for p in portfolios if p[0] not in self._row]
        for p in portfolios:
            if p[0] in self._row:
                self.set_portfolio(*p, restart_peak=False)
        if not new:
            return
        n, k0 = len(self.symbols), len(self.accounts)
        units, ref = np.zeros((len(new), n)), np.full((len(new), n), np.nan)
        for i, (account, u, _cash, r, _since) in enumerate(new):
            self._row[account] = k0 + i
            self.accounts.append(account)
            for s, x in u.items():
                units[i, self._col[s]] = x
            for s, x in r.items():
                ref[i, self._col[s]] = x
        self.units = np.vstack([self.units, units])
        self.ref_prices = np.vstack([self.ref_prices, ref])
        self.cash = np.concatenate([self.cash, [p[2] for p in new]])
        self.peak = np.concatenate([self.peak, np.zeros(len(new))])
        self.since += [p[4] for p in new]

    def prices(self) -> np.ndarray:
        """(accounts x symbols) the price each account's units are valued at now."""
        return np.where(np.isnan(self.last_close)[None, :], self.ref_prices, self.last_close[None, :])

    def values(self) -> np.ndarray:
        held = self.units != 0
        # a held symbol with neither a close nor a snapshot price makes the value unknown
        px = np.where(held, self.prices(), 0.0)
        return self.cash + (self.units * px).sum(axis=1)

    def weights(self) -> np.ndarray:
        """(accounts x symbols) fractions of each account's value (cash is the rest)."""
        v = self.values()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.units != 0, self.units * self.prices(), 0.0) / np.where(
                v > 0, v, np.nan)[:, None]

    def take_closes(self, closes: Mapping[str, float]) -> None:
        """Latest closes without valuing (days before any watched portfolio existed)."""
        for s, p in closes.items():
            k = self._col.get(s)
            if k is not None:
                self.last_close[k] = p

    def advance(self, day: date, closes: Mapping[str, float]) -> np.ndarray:
        """Take a completed day's closes; returns the values, the peaks now include them. A day
        not after the last one taken changes nothing (a replay after a reload is harmless)."""
        if self.last_day is not None and day <= self.last_day:
            return self.values()
        self.take_closes(closes)
        self.last_day = day
        v = self.values()
        counts = np.array([s is None or s <= day for s in self.since], dtype=bool)
        self.peak = np.where(counts & np.isfinite(v), np.fmax(self.peak, v), self.peak)
        return v

    def portfolio(self, account: str) -> dict[str, float]:
        i = self._row[account]
        return {s: float(self.units[i, k]) for s, k in self._col.items() if self.units[i, k] != 0}
