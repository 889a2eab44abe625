"""EWMA covariance of daily log returns (RiskMetrics style), updated one trading day at a time.

Pure numpy, no I/O. The estimator, for every pair of symbols (i, j):

    S_ij = sum over days t on which both i and j have a return of (1 - lam) * lam**k * r_ti * r_tj
    W_ij = the same sum with r_ti * r_tj replaced by 1
    cov_ij = S_ij / W_ij

where k counts the later days on which both i and j had a return. With a full panel this is the
RiskMetrics recursion `S = lam * S + (1 - lam) * r r'`, divided by `W = 1 - lam**T`: the division
is a bias correction for short histories (without it the first return would enter with weight
1 - lam = 6 % and every young variance would start near zero); after ~75 days at lam = 0.94 it is
below 1 % and the estimate is RiskMetrics proper.

Missing returns. A symbol without a return on a day (no close that day or on the previous day of
the tenant's calendar: not yet listed, halted, or its price feed skipped the day) is left out of
that day's update: its row and column are neither decayed nor updated, as if that day did not
exist for it. Treating a missing return as zero would pull its variance and correlations towards
zero and understate risk; carrying the last price forward does the same. The price of this
pairwise scheme is that pairs estimated over different days need not form a positive
semi-definite matrix, so `portfolio.py` projects the correlation matrix onto the PSD cone before
any portfolio is measured with it.

Zero mean, as RiskMetrics: a daily mean is tiny next to a daily volatility and estimating it only
adds noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_DECAY = 0.94


def halflife_days(decay: float) -> float:
    """Days after which an observation's weight has halved: lam**h = 1/2."""
    return math.log(0.5) / math.log(decay)


def _check_decay(decay: float) -> float:
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EWMA decay must lie strictly between 0 and 1, got {decay}")
    return float(decay)


class EwmaCovariance:
    """Pairwise EWMA second moments of daily log returns; grows as new symbols appear."""

    def __init__(self, decay: float = DEFAULT_DECAY) -> None:
        self.decay = _check_decay(decay)
        self.symbols: list[str] = []
        self._index: dict[str, int] = {}
        self._s = np.zeros((0, 0))
        self._w = np.zeros((0, 0))
        #: co-observations: days on which both symbols had a return (diagonal: a symbol's own)
        self._n = np.zeros((0, 0), dtype=np.int64)
        #: days that contributed at least one return
        self.days = 0

    # ------------------------------------------------------------------ updating

    def _add_symbols(self, symbols: Sequence[str]) -> None:
        new = sorted(s for s in set(symbols) if s not in self._index)
        if not new:
            return
        for s in new:
            self._index[s] = len(self.symbols)
            self.symbols.append(s)
        grow = ((0, len(new)), (0, len(new)))
        self._s = np.pad(self._s, grow)
        self._w = np.pad(self._w, grow)
        self._n = np.pad(self._n, grow)

    def update(self, returns: Mapping[str, float]) -> None:
        """Fold in one day's log returns (symbol -> return); symbols absent are untouched."""
        if not returns:
            return
        self._add_symbols(list(returns))
        idx = np.fromiter((self._index[s] for s in returns), dtype=np.intp, count=len(returns))
        r = np.fromiter((float(v) for v in returns.values()), dtype=float, count=len(returns))
        if not np.all(np.isfinite(r)):
            raise ValueError("returns must be finite")
        block = np.ix_(idx, idx)
        lam = self.decay
        # One vectorized step on the observed block; the rest of the matrix is not decayed.
        self._s[block] = lam * self._s[block] + (1.0 - lam) * np.outer(r, r)
        self._w[block] = lam * self._w[block] + (1.0 - lam)
        self._n[block] += 1
        self.days += 1

    @classmethod
    def from_panel(
        cls, symbols: Sequence[str], returns: np.ndarray, decay: float = DEFAULT_DECAY
    ) -> EwmaCovariance:
        """Batch estimate from a (days x symbols) panel of log returns, NaN where missing.

        Closed form of the same estimator (no loop over days): the weight of day t for pair
        (i, j) is (1 - lam) * lam**k with k = co-observed days after t. Used to rebuild a model
        from stored closes, and as an independent check of `update`.
        """
        model = cls(decay)
        panel = np.asarray(returns, dtype=float)
        if panel.ndim != 2 or panel.shape[1] != len(symbols):
            raise ValueError("returns must be a (days x symbols) array matching symbols")
        if len(set(symbols)) != len(symbols):
            raise ValueError("symbols must be unique")
        model._add_symbols(list(symbols))
        order = np.array([model._index[s] for s in symbols], dtype=np.intp)
        seen = ~np.isnan(panel)
        day_used = seen.any(axis=1)
        seen, r = seen[day_used], np.where(seen, panel, 0.0)[day_used]
        if len(r):
            both = seen[:, :, None] & seen[:, None, :]  # (T, n, n) co-observed
            count = both.sum(axis=0)
            later = count[None, :, :] - np.cumsum(both, axis=0)
            weights = np.where(both, (1.0 - model.decay) * model.decay ** later, 0.0)
            s = np.einsum("tij,ti,tj->ij", weights, r, r)
            w = weights.sum(axis=0)
            inv = np.empty_like(order)
            inv[order] = np.arange(len(order))
            perm = np.ix_(inv, inv)  # panel column order -> model order (sorted)
            model._s, model._w, model._n = s[perm], w[perm], count[perm].astype(np.int64)
        model.days = int(day_used.sum())
        return model

    # ------------------------------------------------------------------ reading

    def subset(self, symbols: Sequence[str]) -> EwmaCovariance:
        """A copy holding only `symbols` (those known): every read of them gives what this model
        gives, and nothing links the copy to this model, so another thread may read it while
        this one is updated (O(n^2) to copy; the API measures on such a copy off the event
        loop)."""
        keep = sorted({s for s in symbols if s in self._index})
        out = EwmaCovariance(self.decay)
        out.symbols = keep
        out._index = {s: k for k, s in enumerate(keep)}
        idx = np.array([self._index[s] for s in keep], dtype=np.intp)
        block = np.ix_(idx, idx)
        out._s, out._w, out._n = self._s[block], self._w[block], self._n[block]  # copies
        out.days = self.days
        return out

    def observations(self, symbol: str) -> int:
        i = self._index.get(symbol)
        return 0 if i is None else int(self._n[i, i])

    def covariance(self, symbols: Sequence[str] | None = None) -> np.ndarray:
        """Daily covariance of `symbols` (default: all, in `self.symbols` order).

        NaN where a pair has never been observed together (or a symbol is unknown)."""
        symbols = list(self.symbols if symbols is None else symbols)
        n = len(symbols)
        out = np.full((n, n), np.nan)
        known = [(k, self._index[s]) for k, s in enumerate(symbols) if s in self._index]
        if known:
            pos = np.array([k for k, _ in known], dtype=np.intp)
            idx = np.array([i for _, i in known], dtype=np.intp)
            w = self._w[np.ix_(idx, idx)]
            s = self._s[np.ix_(idx, idx)]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[np.ix_(pos, pos)] = np.where(w > 0, s / np.where(w > 0, w, 1.0), np.nan)
        return out

    def co_observations(self, symbols: Sequence[str]) -> np.ndarray:
        n = len(symbols)
        out = np.zeros((n, n), dtype=np.int64)
        known = [(k, self._index[s]) for k, s in enumerate(symbols) if s in self._index]
        if known:
            pos = np.array([k for k, _ in known], dtype=np.intp)
            idx = np.array([i for _, i in known], dtype=np.intp)
            out[np.ix_(pos, pos)] = self._n[np.ix_(idx, idx)]
        return out

    def daily_vol(self, symbol: str) -> float | None:
        i = self._index.get(symbol)
        if i is None or self._w[i, i] <= 0:
            return None
        return math.sqrt(max(self._s[i, i] / self._w[i, i], 0.0))
