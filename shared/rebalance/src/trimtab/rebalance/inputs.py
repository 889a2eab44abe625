"""The numeric input of one rebalance, built from an `AccountSnapshot`.

Everything account-specific the problem needs, as float arrays: the boundary where Decimals
become floats (a solver needs them) and where a malformed snapshot is refused. Securities are the
union of held and target symbols, sorted; lots are ordered by security, then acquisition date,
then lot id, so the same snapshot always gives the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property

import numpy as np

from trimtab.shared.events import AccountSnapshot

from .errors import InvalidSnapshot

#: Shares below this are treated as nothing (float noise from Decimal conversion).
SHARES_EPS = 1e-9


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def is_long_term(acquired_on: date, trade_date: date) -> bool:
    """Held more than one year on the trade date (sold after the first anniversary).

    A lot bought on 29 February has its anniversary on 28 February of the next year.
    """
    try:
        anniversary = acquired_on.replace(year=acquired_on.year + 1)
    except ValueError:
        anniversary = acquired_on.replace(year=acquired_on.year + 1, day=28)
    return trade_date > anniversary


@dataclass(frozen=True, eq=False)
class RebalanceInput:
    """One account's data, as arrays indexed by security (n) and by lot (m)."""

    account_id: str
    account_type: str
    trade_date: date
    symbols: tuple[str, ...]
    price_usd: np.ndarray
    target_weight: np.ndarray
    restricted: np.ndarray
    half_spread_bps: np.ndarray
    commission_usd_per_share: np.ndarray
    lot_ids: tuple[str, ...]
    lot_security: np.ndarray
    lot_shares: np.ndarray
    lot_basis_usd_per_share: np.ndarray
    lot_acquired_on: tuple[date, ...]
    lot_long_term: np.ndarray
    lot_tax_rate: np.ndarray
    cash_usd: float
    cash_reserve_usd: float
    band_abs: float
    #: Bound on buys plus sells, as a fraction of V0 (a security is never both bought and sold).
    max_turnover: float | None = None
    #: Lots made up for shares the snapshot holds without lot detail (basis = price: no gain).
    untracked_lots: tuple[str, ...] = field(default=())

    # ------------------------------------------------------------------ sizes

    @property
    def n_securities(self) -> int:
        return len(self.symbols)

    @property
    def n_lots(self) -> int:
        return len(self.lot_ids)

    @cached_property
    def max_lots_per_security(self) -> int:
        if self.n_lots == 0:
            return 0
        return int(np.bincount(self.lot_security, minlength=self.n_securities).max())

    # ------------------------------------------------------------------ derived values

    @cached_property
    def shares(self) -> np.ndarray:
        return _frozen(np.bincount(self.lot_security, weights=self.lot_shares,
                                   minlength=self.n_securities).astype(float))

    @cached_property
    def holdings_usd(self) -> np.ndarray:
        return _frozen(self.price_usd * self.shares)

    @cached_property
    def value_usd(self) -> float:
        """V0: cash plus the market value of every position."""
        return float(self.cash_usd + self.holdings_usd.sum())

    @cached_property
    def pre_weight(self) -> np.ndarray:
        return _frozen(self.holdings_usd / self.value_usd)

    @property
    def cash_weight(self) -> float:
        return self.cash_usd / self.value_usd

    @property
    def reserve_weight(self) -> float:
        return self.cash_reserve_usd / self.value_usd

    @property
    def cash_target_weight(self) -> float:
        """Cash the account should hold: the reserve, or the model's implied cash if larger."""
        return max(self.reserve_weight, 1.0 - float(self.target_weight.sum()))

    @cached_property
    def cost_rate(self) -> np.ndarray:
        """Linear cost per dollar traded: half spread plus commission per share over price."""
        return _frozen(self.half_spread_bps / 1e4 + self.commission_usd_per_share / self.price_usd)

    @cached_property
    def lot_price_usd(self) -> np.ndarray:
        return _frozen(self.price_usd[self.lot_security])

    @cached_property
    def lot_gain_usd_per_share(self) -> np.ndarray:
        return _frozen(self.lot_price_usd - self.lot_basis_usd_per_share)

    @cached_property
    def lot_tax_per_weight(self) -> np.ndarray:
        """Tax per unit of account weight sold from each lot: (1 - b/p) r; negative for losses."""
        return _frozen((1.0 - self.lot_basis_usd_per_share / self.lot_price_usd) * self.lot_tax_rate)

    @cached_property
    def lot_weight(self) -> np.ndarray:
        return _frozen(self.lot_shares * self.lot_price_usd / self.value_usd)

    @cached_property
    def lot_rank(self) -> np.ndarray:
        """Position of each lot among its security's lots (its slot in the padded problem)."""
        rank = np.zeros(self.n_lots, dtype=np.int64)
        for i in range(self.n_securities):
            idx = self.lots_of(i)
            rank[idx] = np.arange(len(idx))
        return _frozen(rank)

    def lots_of(self, i: int) -> np.ndarray:
        """Lot indices of security i, in the input's order."""
        return np.flatnonzero(self.lot_security == i)


def _f(x: object) -> float:
    return float(x)  # Decimal -> float, exact to double precision


def from_snapshot(snapshot: AccountSnapshot) -> RebalanceInput:
    """Validate `snapshot` and turn it into arrays; raises `InvalidSnapshot` on any inconsistency."""
    secs: dict[str, object] = {}
    for s in snapshot.securities:
        if s.symbol in secs:
            raise InvalidSnapshot(f"security {s.symbol} listed twice", symbol=s.symbol)
        secs[s.symbol] = s
    positions = {}
    for p in snapshot.positions:
        if p.symbol in positions:
            raise InvalidSnapshot(f"position {p.symbol} listed twice", symbol=p.symbol)
        positions[p.symbol] = p
    for sym, w in snapshot.targets.items():
        if w < 0:
            raise InvalidSnapshot(f"target of {sym} is negative", symbol=sym)
    total_target = sum((float(w) for w in snapshot.targets.values()), 0.0)
    if total_target > 1.0 + 1e-9:
        raise InvalidSnapshot(f"targets sum to {total_target:.6f} > 1")

    held = {sym for sym, p in positions.items() if float(p.shares) > SHARES_EPS or p.lots}
    symbols = tuple(sorted(held | set(snapshot.targets)))
    missing = [s for s in symbols if s not in secs]
    if missing:
        raise InvalidSnapshot(f"no price for {missing}", symbols=missing)
    index = {s: i for i, s in enumerate(symbols)}

    trade_date = snapshot.as_of.date()
    taxable = snapshot.account_type == "taxable"
    st, lt = _f(snapshot.tax_rates.short_term), _f(snapshot.tax_rates.long_term)

    lot_rows: list[tuple[int, date, str, float, float]] = []
    untracked: list[str] = []
    for sym in symbols:
        pos = positions.get(sym)
        if pos is None:
            continue
        price = _f(secs[sym].price_usd)  # type: ignore[attr-defined]
        lot_total = 0.0
        for lot in pos.lots:
            if lot.acquired_on > trade_date:
                raise InvalidSnapshot(f"lot {lot.lot_id} acquired after the snapshot", lot_id=lot.lot_id)
            lot_rows.append((index[sym], lot.acquired_on, lot.lot_id, _f(lot.shares),
                             _f(lot.cost_basis_usd_per_share)))
            lot_total += _f(lot.shares)
        rest = _f(pos.shares) - lot_total
        if rest < -1e-6:
            raise InvalidSnapshot(f"lots of {sym} hold {lot_total} shares, the position {pos.shares}",
                                  symbol=sym)
        if rest > 1e-6:
            # Shares without lot detail: sellable, with no known gain (basis = price).
            lot_id = f"{sym}:untracked"
            lot_rows.append((index[sym], trade_date, lot_id, rest, price))
            untracked.append(lot_id)
    lot_rows.sort(key=lambda r: (r[0], r[1], r[2]))
    if len({r[2] for r in lot_rows}) != len(lot_rows):
        raise InvalidSnapshot("lot ids are not unique")

    long_term = np.array([is_long_term(r[1], trade_date) for r in lot_rows], dtype=bool)
    rates = np.where(long_term, lt, st) if taxable else np.zeros(len(lot_rows))

    def arr(values: list[float], dtype: type = float) -> np.ndarray:
        return _frozen(np.array(values, dtype=dtype))

    restricted_set = set(snapshot.restricted)
    inp = RebalanceInput(
        account_id=snapshot.account_id,
        account_type=snapshot.account_type,
        trade_date=trade_date,
        symbols=symbols,
        price_usd=arr([_f(secs[s].price_usd) for s in symbols]),  # type: ignore[attr-defined]
        target_weight=arr([_f(snapshot.targets.get(s, 0)) for s in symbols]),
        restricted=arr([s in restricted_set for s in symbols], bool),
        half_spread_bps=arr([_f(secs[s].half_spread_bps) for s in symbols]),  # type: ignore[attr-defined]
        commission_usd_per_share=arr(
            [_f(secs[s].commission_usd_per_share) for s in symbols]),  # type: ignore[attr-defined]
        lot_ids=tuple(r[2] for r in lot_rows),
        lot_security=arr([r[0] for r in lot_rows], np.int64),
        lot_shares=arr([r[3] for r in lot_rows]),
        lot_basis_usd_per_share=arr([r[4] for r in lot_rows]),
        lot_acquired_on=tuple(r[1] for r in lot_rows),
        lot_long_term=_frozen(long_term),
        lot_tax_rate=_frozen(np.asarray(rates, dtype=float)),
        cash_usd=_f(snapshot.cash_usd),
        cash_reserve_usd=_f(snapshot.cash_reserve_usd),
        band_abs=_f(snapshot.policy.band_abs),
        max_turnover=None if snapshot.policy.max_turnover is None else _f(snapshot.policy.max_turnover),
        untracked_lots=tuple(untracked),
    )
    if not inp.value_usd > 0:
        raise InvalidSnapshot(f"account value {inp.value_usd} is not positive")
    if (inp.lot_shares < 0).any() or (inp.lot_basis_usd_per_share < 0).any():
        raise InvalidSnapshot("negative lot shares or basis")
    return inp
