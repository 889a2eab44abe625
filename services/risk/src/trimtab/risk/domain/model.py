"""One tenant's risk model: its closes, and the EWMA covariance of their complete days. Pure.

Invariant: the covariance is always the EWMA of the returns of the complete days of the price
book, exactly what `rebuild()` computes from scratch (so a restart, which rebuilds from the stored
closes, ends with the same model). Ticks in calendar order keep it so incrementally, one
vectorized update per completed day. A tick that changes a complete day (a late tick, e.g. one
partition of the ticks topic running ahead of another during a replay) only marks the model
dirty; the rebuild happens once, when the model is next read, so a burst of late ticks costs one
rebuild, not one per tick.

`version` counts changes of the model's inputs (a day completed with returns, or a correction);
it is persisted, so an assessment names the exact model it used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime

import numpy as np

from .ewma import DEFAULT_DECAY, EwmaCovariance, halflife_days
from .prices import PriceBook, TickEffect

MODEL_NAME = "ewma-riskmetrics"


class RiskModel:
    def __init__(self, decay: float = DEFAULT_DECAY, version: int = 0) -> None:
        self.decay = decay
        self.version = version
        self.book = PriceBook()
        self._ewma = EwmaCovariance(decay)
        self._dirty = False
        self._return_days: list[date] = []
        self._panel: tuple[int, list[str], np.ndarray] | None = None

    @classmethod
    def from_closes(
        cls, rows: list[tuple[str, date, float, datetime]], decay: float = DEFAULT_DECAY,
        version: int = 0,
    ) -> RiskModel:
        model = cls(decay, version)
        model.book.load(rows)
        model.rebuild()
        return model

    # ------------------------------------------------------------------ inputs

    def on_tick(self, symbol: str, day: date, price_usd: float, as_of: datetime) -> TickEffect:
        """Record one tick; returns its effect (the version is bumped if the inputs changed)."""
        opened = self.book.open_day
        effect = self.book.record(symbol, day, price_usd, as_of)
        if effect is TickEffect.NEW_DAY and opened is not None:
            returns = self.book.returns_on(opened)
            if returns:
                if not self._dirty:  # a dirty model is rebuilt on read; skip the wasted step
                    self._ewma.update(returns)
                self._return_days.append(opened)
                self.version += 1
        elif effect is TickEffect.CORRECTION:
            self._dirty = True
            self._return_days = self.book.return_days()
            self.version += 1
        return effect

    def rebuild(self) -> None:
        symbols, days, panel = self.book.return_panel()
        self._ewma = EwmaCovariance.from_panel(symbols, panel, self.decay)
        self._return_days = days
        self._dirty = False

    # ------------------------------------------------------------------ reading

    @property
    def covariance(self) -> EwmaCovariance:
        if self._dirty:
            self.rebuild()
        return self._ewma

    @property
    def observations(self) -> int:
        return len(self._return_days)

    @property
    def window_start(self) -> date | None:
        return self._return_days[0] if self._return_days else None

    @property
    def window_end(self) -> date | None:
        return self._return_days[-1] if self._return_days else None

    @property
    def halflife_days(self) -> float:
        return halflife_days(self.decay)

    def recent_returns(
        self, symbols: Sequence[str], max_days: int = 500, min_days: int = 60,
    ) -> tuple[tuple[str, ...], np.ndarray]:
        """(symbols kept, (T x kept) log returns) of the last `max_days` return days on which
        every kept symbol has a return: the window of historical VaR and drawdown.

        A symbol with fewer than `min_days` returns in the window is left out (too new to
        replay); the rest are replayed only on their common days. The panel is cached per
        model version (rebuilding it walks the whole price book)."""
        if self._dirty:
            self.rebuild()
        if self._panel is None or self._panel[0] != self.version:
            syms, _days, panel = self.book.return_panel()
            self._panel = (self.version, syms, panel)
        _, syms, panel = self._panel
        col = {s: i for i, s in enumerate(syms)}
        window = panel[-max_days:]
        keep = [s for s in sorted(set(symbols)) if s in col
                and np.isfinite(window[:, col[s]]).sum() >= min_days]
        while keep:
            sub = window[:, [col[s] for s in keep]]
            rows = np.isfinite(sub).all(axis=1)
            if rows.sum() >= min_days:
                return tuple(keep), sub[rows]
            # drop the sparsest symbol: it is the one shrinking the common window most
            keep.remove(min(keep, key=lambda s: (np.isfinite(window[:, col[s]]).sum(), s)))
        return (), np.zeros((0, 0))

    def digest(self) -> str:
        """A short hash of the covariance (10 significant digits), to compare two models."""
        symbols = sorted(self.covariance.symbols)
        mat = self.covariance.covariance(symbols)
        text = ",".join(symbols) + "|" + ";".join(f"{x:.9e}" for x in mat.ravel())
        return hashlib.sha256(text.encode()).hexdigest()[:16]
