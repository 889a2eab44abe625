"""One tenant's book as matrices, to find on each tick the accounts that may have left their band.

Rows are accounts, columns securities: shares held, target weights, plus per-account cash, band,
whether drift is blocked (pending or executing) and when the account was last re-armed. Prices
are one vector (NaN = no price yet). The engine only screens: it answers "which accounts holding
or targeting S are out of band now?"; the caller confirms each candidate exactly against the
database (`drift.drift_of`), so a stale row here can cost a wasted check, never a wrong event.

Each row remembers the database `revision` it was loaded from; the caller reloads rows whose
revision changed, which keeps several replicas and the API's writes coherent without messaging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .drift import vector_drift

#: Screening slack: float rounding may only widen the candidate set, never shrink it.
SCREEN_TOLERANCE = 1e-9


@dataclass(frozen=True)
class EngineAccount:
    account_id: str
    revision: int
    cash_usd: float
    band_abs: float
    shares: Mapping[str, float] = field(default_factory=dict)
    targets: Mapping[str, float] = field(default_factory=dict)
    blocked: bool = False
    #: Wall-clock seconds (epoch) of the last re-arm after a rejection; None if none applies.
    rearmed_at_s: float | None = None


class DriftEngine:
    def __init__(self, capacity: int = 64) -> None:
        self._symbols: list[str] = []
        self._col: dict[str, int] = {}
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._rev: dict[str, int] = {}
        self.prices = np.empty(0)
        self._shares = np.zeros((capacity, 0))
        self._targets = np.zeros((capacity, 0))
        self._cash = np.zeros(capacity)
        self._band = np.zeros(capacity)
        self._blocked = np.zeros(capacity, dtype=bool)
        self._rearmed = np.full(capacity, np.nan)

    # ------------------------------------------------------------------ shape

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def account_ids(self) -> set[str]:
        return set(self._ids)

    def revision(self, account_id: str) -> int | None:
        return self._rev.get(account_id)

    def _column(self, symbol: str) -> int:
        j = self._col.get(symbol)
        if j is None:
            j = len(self._symbols)
            self._symbols.append(symbol)
            self._col[symbol] = j
            cap = self._shares.shape[0]
            self._shares = np.hstack([self._shares, np.zeros((cap, 1))])
            self._targets = np.hstack([self._targets, np.zeros((cap, 1))])
            self.prices = np.append(self.prices, np.nan)
        return j

    def _grow(self) -> None:
        cap = self._shares.shape[0]
        new = max(2 * cap, 16)
        s = self._shares.shape[1]
        self._shares = np.vstack([self._shares, np.zeros((new - cap, s))])
        self._targets = np.vstack([self._targets, np.zeros((new - cap, s))])
        self._cash = np.concatenate([self._cash, np.zeros(new - cap)])
        self._band = np.concatenate([self._band, np.zeros(new - cap)])
        self._blocked = np.concatenate([self._blocked, np.zeros(new - cap, dtype=bool)])
        self._rearmed = np.concatenate([self._rearmed, np.full(new - cap, np.nan)])

    # ------------------------------------------------------------------ updates

    def set_price(self, symbol: str, price_usd: float) -> None:
        j = self._column(symbol)  # first: adding a column replaces self.prices
        self.prices[j] = price_usd

    def upsert(self, acc: EngineAccount) -> None:
        for sym in (*acc.shares, *acc.targets):
            self._column(sym)
        i = self._row.get(acc.account_id)
        if i is None:
            if len(self._ids) == self._shares.shape[0]:
                self._grow()
            i = len(self._ids)
            self._ids.append(acc.account_id)
            self._row[acc.account_id] = i
        self._shares[i, :] = 0.0
        self._targets[i, :] = 0.0
        for sym, q in acc.shares.items():
            self._shares[i, self._col[sym]] += q
        for sym, w in acc.targets.items():
            self._targets[i, self._col[sym]] = w
        self._cash[i] = acc.cash_usd
        self._band[i] = acc.band_abs
        self._blocked[i] = acc.blocked
        self._rearmed[i] = np.nan if acc.rearmed_at_s is None else acc.rearmed_at_s
        self._rev[acc.account_id] = acc.revision

    def upsert_many(self, accounts: Iterable[EngineAccount]) -> None:
        for acc in accounts:
            self.upsert(acc)

    def remove(self, account_id: str) -> None:
        i = self._row.pop(account_id, None)
        if i is None:
            return
        self._rev.pop(account_id, None)
        last = len(self._ids) - 1
        if i != last:  # move the last row into the hole so active rows stay contiguous
            moved = self._ids[last]
            for arr in (self._shares, self._targets, self._cash, self._band, self._blocked, self._rearmed):
                arr[i] = arr[last]
            self._ids[i] = moved
            self._row[moved] = i
        self._ids.pop()

    # ------------------------------------------------------------------ screening

    def candidates(self, symbol: str, now_s: float, min_interval_s: float) -> list[str]:
        """Armed accounts holding or targeting `symbol` whose drift exceeds their band."""
        j = self._col.get(symbol)
        n = len(self._ids)
        if j is None or n == 0:
            return []
        shares, targets = self._shares[:n], self._targets[:n]
        touches = (shares[:, j] != 0) | (targets[:, j] > 0)
        rearmed = self._rearmed[:n]
        cooled = np.isnan(rearmed) | (now_s - np.nan_to_num(rearmed) >= min_interval_s)
        idx = np.nonzero(touches & ~self._blocked[:n] & cooled)[0]
        if idx.size == 0:
            return []
        vd = vector_drift(shares[idx], targets[idx], self._cash[idx], self.prices,
                          self._band[idx], SCREEN_TOLERANCE)
        return [self._ids[i] for i in idx[vd.breach]]
