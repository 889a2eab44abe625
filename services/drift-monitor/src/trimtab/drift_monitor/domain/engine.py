"""One tenant's book as sparse matrices, to find on each tick the accounts that may fire a rule.

Layout (CSR with slack): every account row owns a contiguous slot range [start, start+cap) of the
entry arrays; each used slot is one symbol the account holds or targets, with its shares, target,
band, market value and whether it counts in portfolio drift. Free slots point at column 0, a
dummy security priced 0 with zero shares and target, so they add nothing. A column index
(security -> entry positions) lets a single-security tick touch only that security's holders.

- tick(symbol): mv[E] = shares x new price for the security's entries E, value[rows] += shares x
  (new - old) (incremental; exact recomputation when the old price was unknown, and for the whole
  book every REFRESH_EVERY incremental ticks so float error cannot accumulate), then the band,
  portfolio, cash and withdrawal checks for exactly those rows, vectorized over their slots.
  The band check needs no pass over an account's other symbols: symbol e is in band iff
  lo_e <= value <= hi_e with lo_e = mv_e / (target_e + band_e) (infinite when that is <= 0,
  e.g. a zero-width relative band on a zero target) and hi_e = mv_e / (target_e - band_e)
  (infinite when target <= band), so the whole account is in band iff max_e lo_e <= value
  <= min_e hi_e. Each row caches that [lo, hi]; a tick updates it from the ticked entries alone and
  rescans only rows where the ticked entry was the binding bound and moved inwards.
- tick_many / evaluate_all: the whole book at once (gather, multiply, bincount, compare).
- upsert: rewrites an account's slots in place when its symbols fit (symbols that stay keep their
  slot, so the column index stays valid); otherwise moves it to fresh slots at the end and turns
  the old range into dummy slots of row 0, a permanently dead row. Compaction rebuilds everything
  when a third of the slots is garbage.

The engine only screens. It answers "which accounts may fire now?" with a small tolerance that
can only add candidates; the caller decides each candidate exactly (`rules.evaluate`, Decimal) on
the locked database rows. A stale row here can cost a wasted check, never a wrong event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: Screening slack on weights: float rounding may only widen the candidate set, never shrink it.
SCREEN_TOLERANCE = 1e-9
#: Free slots given to every account so that buying a new symbol rarely moves the row.
SLACK = 2
#: Incremental value updates between exact recomputations of every account value.
REFRESH_EVERY = 4096
DUMMY = 0

F = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class EngineAccount:
    account_id: str
    revision: int
    cash_usd: float
    #: Absolute band (weight); None = no absolute part. With band_rel: hybrid.
    band_abs: float | None
    shares: Mapping[str, float] = field(default_factory=dict)
    #: Effective targets (after custom targets and exclusions).
    targets: Mapping[str, float] = field(default_factory=dict)
    blocked: bool = False
    #: Wall-clock seconds (epoch) of the last re-arm after a refusal; None if none applies.
    rearmed_at_s: float | None = None
    band_rel: float | None = None
    portfolio_band: float | None = None
    cash_trigger_usd: float | None = None
    cash_reserve_usd: float = 0.0
    withdrawal_usd: float = 0.0
    never_trade: frozenset[str] = frozenset()
    #: Epoch seconds before which interval-bound rules stay quiet (last fills + minimum interval).
    rebalance_from_s: float = -np.inf


@dataclass(frozen=True)
class Screen:
    """The screened rows: which rules may fire for each (before hysteresis)."""

    rows: I64
    measurable: B
    band: B
    portfolio: B
    cash_excess: B
    withdrawal: B


def _grow(a: np.ndarray, n: int, fill: float | int | bool = 0) -> np.ndarray:
    if a.shape[0] >= n:
        return a
    new = max(n, 2 * a.shape[0], 16)
    out = np.full(new, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class DriftEngine:
    def __init__(self, capacity: int = 64) -> None:
        self._names: list[str] = [""]  # column 0: the dummy security
        self._col: dict[str, int] = {}
        self.prices = np.zeros(max(capacity, 16))
        self._colent: list[I64] = [np.empty(0, np.int64)]
        # rows (row 0: dead row that owns garbage slots)
        self._ids: list[str | None] = [None]
        self._idarr = np.array(self._ids, dtype=object)  # the same ids, for vectorized lookup
        self._row: dict[str, int] = {}
        rc = max(capacity + 1, 16)
        self._rev = np.zeros(rc, np.int64)
        self._live = np.zeros(rc, bool)
        self._start = np.zeros(rc, np.int64)
        self._cap = np.zeros(rc, np.int64)
        self._cash = np.zeros(rc)
        self._reserve = np.zeros(rc)
        self._cash_tw = np.ones(rc)
        self._value = np.zeros(rc)
        self._port = np.full(rc, np.inf)
        self._ctrig = np.full(rc, np.inf)
        self._wd = np.zeros(rc)
        self._blocked = np.zeros(rc, bool)
        self._rearmed = np.full(rc, np.nan)
        self._rebal_from = np.full(rc, -np.inf)
        self._lo = np.zeros(rc)
        self._hi = np.full(rc, np.inf)
        # entries
        ec = max(capacity * 8, 64)
        self._ind = np.zeros(ec, np.int32)
        self._erow = np.zeros(ec, np.int32)
        self._sh = np.zeros(ec)
        self._tg = np.zeros(ec)
        self._band = np.full(ec, np.inf)
        self._incl = np.zeros(ec)
        self._mv = np.zeros(ec)
        # 1 / (target + band - tol) and 1 / (target - band + tol), +inf where that is <= 0
        self._ilo = np.zeros(ec)
        self._ihi = np.full(ec, np.inf)
        self._tlo = np.zeros(ec)  # mv / dlo
        self._thi = np.full(ec, np.inf)  # mv / dhi, inf when dhi <= 0
        self._nent = 0
        self._layout = 0  # bumped on every change of slots: invalidates the caches below
        self._cache: dict[object, tuple[int, object]] = {}
        self._garbage = 0
        self._since_refresh = 0
        self._any_port = False
        self._any_ctrig = False

    # ------------------------------------------------------------------ shape

    def __len__(self) -> int:
        return len(self._row)

    @property
    def symbols(self) -> list[str]:
        return self._names[1:]

    def account_ids(self) -> set[str]:
        return set(self._row)

    def revision(self, account_id: str) -> int | None:
        i = self._row.get(account_id)
        return None if i is None else int(self._rev[i])

    def memory_bytes(self) -> int:
        arrays = [v for v in vars(self).values() if isinstance(v, np.ndarray)]
        return sum(a.nbytes for a in arrays) + sum(a.nbytes for a in self._colent)

    def _column(self, symbol: str) -> int:
        j = self._col.get(symbol)
        if j is None:
            j = len(self._names)
            self._names.append(symbol)
            self._col[symbol] = j
            self.prices = _grow(self.prices, j + 1, np.nan)
            self.prices[j] = np.nan
            self._colent.append(np.empty(0, np.int64))
        return j

    def _ensure_rows(self, n: int) -> None:
        if self._rev.shape[0] >= n:
            return
        self._rev = _grow(self._rev, n)
        self._live = _grow(self._live, n, False)
        self._start = _grow(self._start, n)
        self._cap = _grow(self._cap, n)
        self._cash = _grow(self._cash, n)
        self._reserve = _grow(self._reserve, n)
        self._cash_tw = _grow(self._cash_tw, n, 1.0)
        self._value = _grow(self._value, n)
        self._port = _grow(self._port, n, np.inf)
        self._ctrig = _grow(self._ctrig, n, np.inf)
        self._wd = _grow(self._wd, n)
        self._blocked = _grow(self._blocked, n, False)
        self._rearmed = _grow(self._rearmed, n, np.nan)
        self._rebal_from = _grow(self._rebal_from, n, -np.inf)
        self._lo = _grow(self._lo, n)
        self._hi = _grow(self._hi, n, np.inf)

    def _ensure_entries(self, n: int) -> None:
        if self._ind.shape[0] >= n:
            return
        self._ind = _grow(self._ind, n)
        self._erow = _grow(self._erow, n)
        self._sh = _grow(self._sh, n)
        self._tg = _grow(self._tg, n)
        self._band = _grow(self._band, n, np.inf)
        self._incl = _grow(self._incl, n)
        self._mv = _grow(self._mv, n)
        self._ilo = _grow(self._ilo, n)
        self._ihi = _grow(self._ihi, n, np.inf)
        self._tlo = _grow(self._tlo, n)
        self._thi = _grow(self._thi, n, np.inf)

    # ------------------------------------------------------------------ prices

    def set_price(self, symbol: str, price_usd: float) -> None:
        """Set a price without screening (values and bounds follow incrementally)."""
        self._apply_price(self._column(symbol), float(price_usd))

    def _entries_of(self, j: int) -> I64:
        e = self._colent[j]
        return e[self._ind[e] == j]  # slots since reassigned to another symbol drop out

    def _cached(self, key: object, make: Callable[[], object]) -> object:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == self._layout:
            return hit[1]
        val = make()
        self._cache[key] = (self._layout, val)
        return val

    def _holders(self, j: int) -> tuple[I64, I64]:
        """(entry positions, rows) of column j, cached until the slot layout changes."""
        def make() -> tuple[I64, I64]:
            e = self._entries_of(j)
            return e, self._erow[e].astype(np.int64)
        return self._cached(("col", j), make)  # type: ignore[return-value]

    @staticmethod
    def _recip(d: F) -> F:
        with np.errstate(divide="ignore"):
            return np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), np.inf)

    def _apply_price(self, j: int, new: float) -> I64:
        """Update price, market values, account values and cached bounds for column j's holders;
        returns the rows touched.

        value < tlo = mv / (target + band) means overweight beyond the band, value > thi = mv /
        (target - band) underweight; with a non-positive denominator the reciprocal is +inf, so
        tlo = +inf (always over) and thi = +inf (never under); 0 x inf = NaN is ignored by
        fmax / fmin (a zero holding is never over)."""
        old = self.prices[j]
        self.prices[j] = new
        e, rows = self._holders(j)
        if e.size == 0:
            return rows
        sh = self._sh[e]
        mv = sh * new
        self._mv[e] = mv
        old_lo, old_hi = self._tlo[e], self._thi[e]
        with np.errstate(invalid="ignore"):
            tlo, thi = mv * self._ilo[e], mv * self._ihi[e]
        self._tlo[e], self._thi[e] = tlo, thi
        if np.isfinite(old) and np.isfinite(new):
            self._value[rows] += sh * (new - old)
            self._since_refresh += 1
            lo, hi = self._lo[rows], self._hi[rows]
            # The cached bound stays exact unless the ticked entry was the binding one and moved
            # inwards (or NaNs are involved): only those rows are rescanned.
            with np.errstate(invalid="ignore"):
                rescan = ((old_lo == lo) & ~(tlo >= old_lo)) | ((old_hi == hi) & ~(thi <= old_hi))
                rescan |= np.isnan(lo) | np.isnan(hi)
            self._lo[rows] = np.fmax(lo, tlo)
            self._hi[rows] = np.fmin(hi, thi)
            if rescan.any():
                self._recompute_rows(rows[rescan], values=False)
            if self._since_refresh >= REFRESH_EVERY:
                self.refresh_values()
        else:
            self._recompute_rows(rows)
        return rows

    def _recompute_rows(self, rows: I64, values: bool = True) -> None:
        """Exact values (optional) and bounds of `rows` from their slots."""
        if rows.size == 0:
            return
        pos, seg = self._slots(rows)
        if values:
            self._value[rows] = self._cash[rows] + np.add.reduceat(self._mv[pos], seg)
        self._lo[rows] = np.fmax.reduceat(self._tlo[pos], seg)
        self._hi[rows] = np.fmin.reduceat(self._thi[pos], seg)

    def refresh_values(self) -> None:
        """Exact market values, account values and bounds for the whole book."""
        n, r = self._nent, len(self._ids)
        np.multiply(self._sh[:n], self.prices[self._ind[:n]], out=self._mv[:n])
        order, seg, lead = self._cached("segments", self._segments)  # type: ignore[misc]
        self._value[:r] = self._cash[:r]
        if order.size:  # segment sums in slot order (sequential, faster than bincount)
            sums = np.add.reduceat(self._mv[:n], seg)
            self._value[order] += sums[1:] if lead else sums
        with np.errstate(invalid="ignore"):
            np.multiply(self._mv[:n], self._ilo[:n], out=self._tlo[:n])
            np.multiply(self._mv[:n], self._ihi[:n], out=self._thi[:n])
        # Segment max/min in slot order: every row's slots are contiguous; orphaned (garbage)
        # slots are neutral (mv 0, tlo 0, thi NaN), so they may join the neighbouring segment.
        if order.size:
            lo = np.fmax.reduceat(self._tlo[:n], seg)
            hi = np.fmin.reduceat(self._thi[:n], seg)
            self._lo[order] = lo[1:] if lead else lo
            self._hi[order] = hi[1:] if lead else hi
        self._since_refresh = 0

    def _segments(self) -> tuple[I64, I64, bool]:
        r = len(self._ids)
        rows = np.nonzero(self._cap[:r] > 0)[0]
        order = rows[np.argsort(self._start[rows], kind="stable")]
        seg = self._start[order]
        lead = bool(seg.size and seg[0] != 0)
        if lead:
            seg = np.concatenate([[0], seg])
        return order, seg, lead

    # ------------------------------------------------------------------ accounts

    def _slots(self, rows: I64) -> tuple[I64, I64]:
        """Slot positions of `rows` (concatenated) and where each row's segment starts."""
        cap = self._cap[rows]
        seg = np.zeros(rows.size, np.int64)
        np.cumsum(cap[:-1], out=seg[1:])
        total = int(cap.sum())
        pos = np.arange(total, dtype=np.int64) + np.repeat(self._start[rows] - seg, cap)
        return pos, seg

    def upsert(self, acc: EngineAccount) -> None:
        syms = sorted({s for s, q in acc.shares.items() if q != 0} | {s for s, w in acc.targets.items() if w > 0})
        cols = [self._column(s) for s in syms]
        self._layout += 1
        i = self._row.get(acc.account_id)
        if i is None:
            i = len(self._ids)
            self._ensure_rows(i + 1)
            self._ids.append(acc.account_id)
            self._row[acc.account_id] = i
            self._cap[i] = 0
        start, cap = int(self._start[i]), int(self._cap[i])
        if cap and len(cols) <= cap:
            have = {int(self._ind[p]): p for p in range(start, start + cap) if self._ind[p] != DUMMY}
            keep = {c: have[c] for c in cols if c in have}
            free = [p for p in range(start, start + cap) if p not in keep.values()]
            place = dict(keep)
            for c in cols:
                if c not in place:
                    place[c] = free.pop(0)
            for p in free:  # slots no longer used
                self._clear_slot(p, i)
        else:
            if cap:
                for p in range(start, start + cap):
                    self._clear_slot(p, DUMMY)
                self._garbage += cap
            start, cap = self._nent, len(cols) + SLACK
            self._ensure_entries(start + cap)
            self._nent += cap
            self._start[i], self._cap[i] = start, cap
            place = {c: start + k for k, c in enumerate(cols)}
            for p in range(start + len(cols), start + cap):
                self._clear_slot(p, i)
        never = acc.never_trade
        for s, c in zip(syms, cols, strict=True):
            p = place[c]
            if self._ind[p] != c:
                self._ind[p] = c
                ent = self._colent[c]
                if not (ent == p).any():
                    self._colent[c] = np.append(ent, p)
            self._erow[p] = i
            tg = float(acc.targets.get(s, 0.0))
            self._sh[p] = float(acc.shares.get(s, 0.0))
            self._tg[p] = tg
            if s in never or (acc.band_abs is None and acc.band_rel is None):
                self._band[p] = np.inf
            else:
                self._band[p] = max((acc.band_rel or 0.0) * tg, acc.band_abs or 0.0)
            self._incl[p] = 0.0 if s in never else 1.0
            self._ilo[p:p + 1] = self._recip(np.array([tg + self._band[p] - SCREEN_TOLERANCE]))
            self._ihi[p:p + 1] = self._recip(np.array([tg - self._band[p] + SCREEN_TOLERANCE]))
            self._mv[p] = self._sh[p] * self.prices[c]
            with np.errstate(invalid="ignore"):
                self._tlo[p] = self._mv[p] * self._ilo[p]
                self._thi[p] = self._mv[p] * self._ihi[p]
        self._rev[i] = acc.revision
        self._live[i] = True
        self._cash[i] = acc.cash_usd
        self._reserve[i] = acc.cash_reserve_usd
        self._cash_tw[i] = 1.0 - sum(float(w) for w in acc.targets.values() if w > 0)
        self._port[i] = np.inf if acc.portfolio_band is None else acc.portfolio_band
        self._ctrig[i] = np.inf if acc.cash_trigger_usd is None else acc.cash_trigger_usd
        self._any_port |= acc.portfolio_band is not None
        self._any_ctrig |= acc.cash_trigger_usd is not None
        self._wd[i] = acc.withdrawal_usd
        self._blocked[i] = acc.blocked
        self._rearmed[i] = np.nan if acc.rearmed_at_s is None else acc.rearmed_at_s
        self._rebal_from[i] = acc.rebalance_from_s
        self._recompute_rows(np.array([i], np.int64))
        if self._garbage * 3 > max(self._nent, 3 * 4096):
            self.compact()

    def _clear_slot(self, p: int, row: int) -> None:
        self._ind[p] = DUMMY
        self._erow[p] = row
        self._sh[p] = self._tg[p] = self._mv[p] = self._incl[p] = self._tlo[p] = self._ilo[p] = 0.0
        self._band[p] = self._ihi[p] = np.inf
        self._thi[p] = np.nan

    def upsert_many(self, accounts: Iterable[EngineAccount]) -> None:
        for acc in accounts:
            self.upsert(acc)

    def remove(self, account_id: str) -> None:
        i = self._row.pop(account_id, None)
        if i is None:
            return
        self._layout += 1
        start, cap = int(self._start[i]), int(self._cap[i])
        for p in range(start, start + cap):
            self._clear_slot(p, DUMMY)
        self._garbage += cap
        self._cap[i] = 0
        self._live[i] = False
        self._ids[i] = None
        self._idarr = np.array(self._ids, dtype=object)

    def compact(self) -> None:
        """Rebuild the slot arrays from the live rows (drops garbage and dead rows)."""
        live = [(aid, i) for i, aid in enumerate(self._ids) if aid is not None]
        rows = np.array([i for _, i in live], np.int64)
        pos, seg = self._slots(rows) if rows.size else (np.empty(0, np.int64), np.empty(0, np.int64))
        used = self._ind[pos] != DUMMY
        counts = np.add.reduceat(used.astype(np.int64), seg) if pos.size else np.zeros(0, np.int64)
        row_of = np.repeat(np.arange(rows.size), self._cap[rows])[used]
        per_row = {k: getattr(self, k)[rows].copy() for k in _ROW_FIELDS}
        ent = {k: getattr(self, k)[pos[used]].copy() for k in _ENTRY_FIELDS}
        self._build([aid for aid, _ in live], per_row, row_of, counts, ent)

    def _build(self, ids: Sequence[str], per_row: Mapping[str, np.ndarray], row_of: I64, counts: I64,
               ent: Mapping[str, np.ndarray]) -> None:
        """Lay out rows 1..n with their entries (row_of sorted ascending, 0-based rows)."""
        n = len(ids)
        self._ids = [None, *ids]
        self._idarr = np.array(self._ids, dtype=object)
        self._row = {a: k + 1 for k, a in enumerate(ids)}
        rc = max(n + 1, 16)
        for k in _ROW_FIELDS:
            cur = getattr(self, k)
            arr = np.full(rc, _ROW_FILL[k], dtype=cur.dtype)
            arr[1:n + 1] = per_row[k]
            setattr(self, k, arr)
        self._start, self._cap, self._value = np.zeros(rc, np.int64), np.zeros(rc, np.int64), np.zeros(rc)
        self._lo, self._hi = np.zeros(rc), np.full(rc, np.inf)
        cap = counts + SLACK
        start = np.zeros(n, np.int64)
        np.cumsum(cap[:-1], out=start[1:])
        self._start[1:n + 1] = start
        self._cap[1:n + 1] = cap
        self._live[1:n + 1] = True
        total = int(cap.sum())
        self._nent = total
        self._garbage = 0
        ec = max(total, 64)
        self._ind = np.zeros(ec, np.int32)
        self._erow = np.zeros(ec, np.int32)
        self._layout += 1
        self._sh, self._tg, self._mv, self._incl, self._tlo, self._ilo = (np.zeros(ec) for _ in range(6))
        self._band, self._ihi = np.full(ec, np.inf), np.full(ec, np.inf)
        self._thi = np.full(ec, np.nan)
        # every slot of row r (free ones included) belongs to r
        self._erow[:total] = np.repeat(np.arange(1, n + 1, dtype=np.int32), cap)
        first = np.zeros(n, np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        pos = start[row_of] + (np.arange(row_of.size) - first[row_of])
        for k in _ENTRY_FIELDS:
            getattr(self, k)[pos] = ent[k]
        self._ilo[pos] = self._recip(self._tg[pos] + self._band[pos] - SCREEN_TOLERANCE)
        self._ihi[pos] = self._recip(self._tg[pos] - self._band[pos] + SCREEN_TOLERANCE)
        self._reindex_columns()
        self._any_port = bool(np.isfinite(self._port[1:n + 1]).any())
        self._any_ctrig = bool(np.isfinite(self._ctrig[1:n + 1]).any())
        self.refresh_values()

    def _reindex_columns(self) -> None:
        n = self._nent
        ind = self._ind[:n]
        order = np.argsort(ind, kind="stable")
        bounds = np.searchsorted(ind[order], np.arange(len(self._names) + 1))
        self._colent = [order[bounds[j]:bounds[j + 1]].astype(np.int64) for j in range(len(self._names))]
        self._colent[DUMMY] = np.empty(0, np.int64)

    def load(self, ids: Sequence[str], rows: Mapping[str, np.ndarray], entry_row: npt.ArrayLike,
             entry_symbol: Sequence[str] | npt.ArrayLike, shares: npt.ArrayLike, targets: npt.ArrayLike,
             never_trade: npt.ArrayLike | None = None, band_abs: npt.ArrayLike | None = None,
             band_rel: npt.ArrayLike | None = None, symbol_names: Sequence[str] | None = None) -> None:
        """Replace the whole book at once (the rebuild path), vectorized.

        `rows` holds per-account arrays: revision, cash_usd, cash_reserve_usd, portfolio_band,
        cash_trigger_usd, withdrawal_usd, blocked, rearmed_at_s, rebalance_from_s (NaN where
        unset; missing keys take defaults). Entries are (row, symbol, shares, target) with one
        entry per (row, symbol); band_abs / band_rel are per account (NaN = unset). With
        `symbol_names`, entry_symbol holds integer codes into it (no string sorting).
        """
        n = len(ids)
        er = np.asarray(entry_row, np.int64)
        order = np.argsort(er, kind="stable")
        er = er[order]
        if symbol_names is not None:
            code_col = np.array([self._column(str(x)) for x in symbol_names] or [0], np.int32)
            cols = code_col[np.asarray(entry_symbol, np.int64)[order]]
        else:
            syms = np.asarray(entry_symbol)[order]
            uniq, inv = np.unique(syms, return_inverse=True)
            cols = (np.array([self._column(str(x)) for x in uniq], np.int32)[inv] if uniq.size
                    else np.empty(0, np.int32))
        sh = np.asarray(shares, float)[order]
        tg = np.asarray(targets, float)[order]
        nt = np.zeros(er.size, bool) if never_trade is None else np.asarray(never_trade, bool)[order]
        ba = np.full(n, np.nan) if band_abs is None else np.asarray(band_abs, float)
        br = np.full(n, np.nan) if band_rel is None else np.asarray(band_rel, float)
        band = np.fmax(np.nan_to_num(br[er], nan=0.0) * tg, np.nan_to_num(ba[er], nan=0.0))
        band[(np.isnan(ba[er]) & np.isnan(br[er])) | nt] = np.inf
        per_row: dict[str, np.ndarray] = {}
        src = {"_rev": "revision", "_cash": "cash_usd", "_reserve": "cash_reserve_usd",
               "_port": "portfolio_band", "_ctrig": "cash_trigger_usd", "_wd": "withdrawal_usd",
               "_blocked": "blocked", "_rearmed": "rearmed_at_s", "_rebal_from": "rebalance_from_s"}
        for k in _ROW_FIELDS:
            v = rows.get(src.get(k, ""))
            per_row[k] = np.full(n, _ROW_FILL[k]) if v is None else np.asarray(v)
        for k in ("_port", "_ctrig"):
            per_row[k] = np.where(np.isnan(per_row[k].astype(float)), np.inf, per_row[k])
        per_row["_rebal_from"] = np.where(np.isnan(per_row["_rebal_from"].astype(float)), -np.inf,
                                          per_row["_rebal_from"])
        per_row["_cash_tw"] = 1.0 - np.bincount(er, np.where(tg > 0, tg, 0.0), minlength=n)
        per_row["_live"] = np.ones(n, bool)
        counts = np.bincount(er, minlength=n).astype(np.int64)
        ent = {"_ind": cols, "_sh": sh, "_tg": tg, "_band": band, "_incl": (~nt).astype(float)}
        self._build(list(ids), per_row, er, counts, ent)

    # ------------------------------------------------------------------ screening

    def _screen_rows(self, rows: I64, full: bool = False) -> Screen:
        """Rules for `rows`: the band from the cached bounds, portfolio drift from the slots."""
        v = self._value[rows]
        with np.errstate(invalid="ignore"):
            band = (v < self._lo[rows]) | (v > self._hi[rows])
        port = np.zeros(rows.size, bool)
        if self._any_port:
            sel = np.nonzero(np.isfinite(self._port[rows]))[0]
            if sel.size:
                pos, seg = self._slots(rows[sel])
                with np.errstate(invalid="ignore", divide="ignore"):
                    a = np.abs(self._mv[pos] / np.repeat(v[sel], self._cap[rows[sel]]) - self._tg[pos])
                    port[sel] = self._portfolio(rows[sel], v[sel], np.add.reduceat(a * self._incl[pos], seg))
        return self._finish(rows, v, band, port)

    def _portfolio(self, rows: I64, v: F, dsum: F) -> B:
        cash_dev = np.abs(self._cash[rows] / v - self._cash_tw[rows])
        return (dsum + cash_dev) / 2 > self._port[rows] - SCREEN_TOLERANCE  # type: ignore[no-any-return]

    def _finish(self, rows: I64, v: F, band: B, port: B) -> Screen:
        with np.errstate(invalid="ignore"):
            ok = v > 0  # NaN (a missing price) compares False
            cash = self._cash[rows]
            if self._any_ctrig:
                unin = cash - np.maximum(self._reserve[rows], self._cash_tw[rows] * v)
                cx = unin > self._ctrig[rows] - SCREEN_TOLERANCE * np.abs(v)
            else:
                cx = np.zeros(rows.size, bool)
            wd = (self._wd[rows] > 0) & (cash < self._reserve[rows] + self._wd[rows] + SCREEN_TOLERANCE * np.abs(v))
        return Screen(rows, ok, band & ok, port & ok, cx & ok, wd & ok)

    def evaluate_all(self) -> Screen:
        """Every rule for every live account (cached bounds; portfolio drift by bincount)."""
        r = len(self._ids)
        rows = np.nonzero(self._live[:r])[0]
        v = self._value[rows]
        with np.errstate(invalid="ignore"):
            band = (v < self._lo[rows]) | (v > self._hi[rows])
        port = np.zeros(rows.size, bool)
        if self._any_port:
            def make() -> tuple[I64, I64]:
                n = self._nent
                pe = np.nonzero(np.isfinite(self._port[:r])[self._erow[:n]] & (self._incl[:n] > 0))[0]
                return pe, self._erow[pe]
            pe, erow = self._cached("portfolio", make)  # type: ignore[misc]
            with np.errstate(invalid="ignore", divide="ignore"):
                a = self._mv[pe] / self._value[erow]
                a -= self._tg[pe]
                np.abs(a, out=a)
                dsum = np.bincount(erow, a, minlength=r)[rows]
                port = self._portfolio(rows, v, dsum)
        return self._finish(rows, v, band, port)

    def _eligible(self, s: Screen, now_s: float, min_interval_s: float) -> list[str]:
        if len(self._idarr) != len(self._ids):
            self._idarr = np.array(self._ids, dtype=object)
        keep = s.withdrawal | s.band | s.portfolio | s.cash_excess
        s = Screen(s.rows[keep], s.measurable[keep], s.band[keep], s.portfolio[keep], s.cash_excess[keep],
                   s.withdrawal[keep])
        rows = s.rows
        re = self._rearmed[rows]
        quiet_ok = np.isnan(re) | (now_s - np.nan_to_num(re) >= min_interval_s)
        armed = self._live[rows] & ~self._blocked[rows] & quiet_ok
        interval_ok = now_s >= self._rebal_from[rows]
        fire = armed & (s.withdrawal | (interval_ok & (s.band | s.portfolio | s.cash_excess)))
        if len(self._idarr) != len(self._ids):
            self._idarr = np.array(self._ids, dtype=object)
        return self._idarr[rows[fire]].tolist()  # type: ignore[no-any-return]

    def _rule_subsets(self, j: int, rows: I64) -> tuple[I64, I64, I64]:
        """Positions within `rows` of accounts with a portfolio band, a cash trigger, a withdrawal."""
        def make() -> tuple[I64, I64, I64]:
            return (np.nonzero(np.isfinite(self._port[rows]))[0], np.nonzero(np.isfinite(self._ctrig[rows]))[0],
                    np.nonzero(self._wd[rows] > 0)[0])
        return self._cached(("rules", j), make)  # type: ignore[return-value]

    def _screen_tick(self, j: int, rows: I64, now_s: float, min_interval_s: float) -> list[str]:
        """The tick path: the band from cached bounds for every holder; the other rules only for
        the holders that have them; eligibility only for the rows that breach something."""
        v = self._value[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            hit = (v < self._lo[rows]) | (v > self._hi[rows])
            pr, cr, wr = self._rule_subsets(j, rows)
            if pr.size:
                sub = rows[pr]
                pos, seg = self._slots(sub)
                a = np.abs(self._mv[pos] / np.repeat(v[pr], self._cap[sub]) - self._tg[pos])
                hit[pr] |= self._portfolio(sub, v[pr], np.add.reduceat(a * self._incl[pos], seg))
            if cr.size:
                sub = rows[cr]
                unin = self._cash[sub] - np.maximum(self._reserve[sub], self._cash_tw[sub] * v[cr])
                hit[cr] |= unin > self._ctrig[sub] - SCREEN_TOLERANCE * np.abs(v[cr])
            wd = np.zeros(0, np.int64)
            if wr.size:
                sub = rows[wr]
                short = self._cash[sub] < self._reserve[sub] + self._wd[sub] + SCREEN_TOLERANCE * np.abs(v[wr])
                wd = wr[short]
                hit[wd] = True
            idx = np.nonzero(hit & (v > 0))[0]
        if idx.size == 0:
            return []
        sub = rows[idx]
        re = self._rearmed[sub]
        quiet_ok = np.isnan(re) | (now_s - np.nan_to_num(re) >= min_interval_s)
        armed = self._live[sub] & ~self._blocked[sub] & quiet_ok
        interval_ok = (now_s >= self._rebal_from[sub]) | np.isin(idx, wd)
        if len(self._idarr) != len(self._ids):
            self._idarr = np.array(self._ids, dtype=object)
        return self._idarr[sub[armed & interval_ok]].tolist()  # type: ignore[no-any-return]

    def candidates(self, symbol: str, now_s: float, min_interval_s: float) -> list[str]:
        """Armed accounts holding or targeting `symbol` for which some rule may fire now."""
        j = self._col.get(symbol)
        if j is None:
            return []
        rows = self._holders(j)[1]
        if rows.size == 0:
            return []
        return self._screen_tick(j, rows, now_s, min_interval_s)

    def tick(self, symbol: str, price_usd: float, now_s: float, min_interval_s: float) -> list[str]:
        """A new price for one security: update its holders only, screen them."""
        j = self._column(symbol)
        rows = self._apply_price(j, float(price_usd))
        if rows.size == 0:
            return []
        return self._screen_tick(j, rows, now_s, min_interval_s)

    def tick_many(self, prices: Mapping[str, float], now_s: float, min_interval_s: float) -> list[str]:
        """A batch of prices: recompute the whole book in one pass, screen every account."""
        for sym, p in prices.items():
            self.prices[self._column(sym)] = float(p)
        self.refresh_values()
        return self._eligible(self.evaluate_all(), now_s, min_interval_s)

    def screen_all(self) -> Screen:
        return self.evaluate_all()

    def due_all(self, now_s: float, min_interval_s: float) -> list[str]:
        """Every account that may fire now on the engine's prices (start-up screen)."""
        return self._eligible(self.evaluate_all(), now_s, min_interval_s)

    def account_screen(self, account_id: str) -> Screen | None:
        i = self._row.get(account_id)
        if i is None:
            return None
        return self._screen_rows(np.array([i], np.int64))


_ROW_FIELDS = ("_rev", "_live", "_cash", "_reserve", "_cash_tw", "_port", "_ctrig", "_wd", "_blocked",
               "_rearmed", "_rebal_from")
_ENTRY_FIELDS = ("_ind", "_sh", "_tg", "_band", "_incl")
_ROW_FILL: dict[str, float | bool | int] = {
    "_rev": 0, "_live": False, "_cash": 0.0, "_reserve": 0.0, "_cash_tw": 1.0, "_port": np.inf,
    "_ctrig": np.inf, "_wd": 0.0, "_blocked": False, "_rearmed": np.nan, "_rebal_from": -np.inf,
}
