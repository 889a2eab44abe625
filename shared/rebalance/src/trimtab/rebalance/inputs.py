"""The numeric input of one rebalance, built from an `AccountSnapshot`.

Everything account-specific the problem needs, as float arrays: the boundary where Decimals
become floats (a solver needs them) and where a malformed snapshot is refused. Securities are the
union of held and target symbols, sorted; lots are ordered by security, then acquisition date,
then lot id, so the same snapshot always gives the same arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Self, TypeVar, overload

import numpy as np

from trimtab.shared.events import AccountSnapshot, PositionSnapshot, SecuritySnapshot
from trimtab.shared.limits import trade_year_problem

from .context import EMPTY_CONTEXT, WASH_WINDOW_DAYS, RebalanceContext, SecurityInfo
from .errors import InvalidSnapshot

#: Shares below this are treated as nothing (float noise from Decimal conversion).
SHARES_EPS = 1e-9

_T = TypeVar("_T")


class cached_property(functools.cached_property[_T]):
    """`functools.cached_property` without its lock: Python 3.11 takes one lock per property,
    shared by every instance, on each first access (~1 us; Python 3.12 dropped it). As there,
    the value is stored in the instance's __dict__, which later accesses read directly."""

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> _T: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.attrname] = self.func(instance)
        return value


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
    #: Per-security bands where the policy gives them (None: `band_abs` for every security).
    band_by_security: np.ndarray | None = None
    #: Screens (None: nothing screened). Never bought (the "restrictions" driver), ESG-excluded:
    #: never bought (the "esg" driver, whose switch also restores `target_weight_without_esg`).
    never_buy_mask: np.ndarray | None = None
    esg_mask: np.ndarray | None = None
    target_weight_without_esg: np.ndarray | None = None
    #: Symbols in the problem only because the targets before the ESG screen name them (not
    #: held, not targeted): they take no part in the risk model's scale or the substitute groups.
    screen_only_mask: np.ndarray | None = None
    # ---- from the `RebalanceContext` (defaults: identity risk, no impact, no budgets) ----
    #: Wash-sale group per security (substantially identical securities); default its symbol.
    wash_group: tuple[str, ...] | None = None
    #: Normalized risk model of the drift term: a^T (L L^T + diag(s)) a. None: identity.
    #: The first `risk_model_factors` columns of L are the factor model's (the "risk" driver);
    #: the others are the substitute groups' shared factors (part of "drift").
    risk_loadings: np.ndarray | None = None
    risk_specific: np.ndarray | None = None
    risk_model_factors: int = 0
    #: (n, G) 0/1 membership of substitute groups with two or more securities here: their band
    #: applies to the group's total weight (a swap inside the group is no drift).
    band_groups: np.ndarray | None = None
    #: Market impact coefficient per security, in weight: b sigma sqrt(V0 / ADV).
    impact_coef: np.ndarray | None = None
    #: Loss lots past the harvest thresholds (their loss benefit counts); gains are always True.
    lot_harvestable: np.ndarray | None = None
    #: Household wash-sale bans from trades of the last 30 days (not a choice of this solve).
    wash_no_buy: np.ndarray | None = None
    wash_no_sell_lot: np.ndarray | None = None
    tax_budget_usd: float | None = None
    gain_cap_usd: float | None = None
    mode: str = "both"
    withdrawal_usd: float = 0.0

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
    def withdrawal_weight(self) -> float:
        return self.withdrawal_usd / self.value_usd

    @property
    def groups(self) -> tuple[str, ...]:
        """Wash-sale group of each security."""
        return self.wash_group if self.wash_group is not None else self.symbols

    @cached_property
    def group_names(self) -> tuple[str, ...]:
        """The wash-sale groups present, sorted: `group_code` indexes this."""
        return tuple(sorted(set(self.groups)))

    @cached_property
    def group_code(self) -> np.ndarray:
        """Wash-sale group of each security as an integer (codes follow the sorted group names)."""
        index = {g: c for c, g in enumerate(self.group_names)}
        return _frozen(np.array([index[g] for g in self.groups], dtype=np.int64))

    @cached_property
    def lot_rank_order(self) -> np.ndarray:
        """Lot indices sorted by (security, basis): interchangeable lots end up adjacent."""
        return _frozen(np.lexsort((np.arange(self.n_lots), self.lot_basis_usd_per_share, self.lot_security)))

    @cached_property
    def loadings(self) -> np.ndarray:
        if self.risk_loadings is None:
            return _frozen(np.zeros((self.n_securities, 0)))
        return self.risk_loadings

    @cached_property
    def band(self) -> np.ndarray:
        """The band of each security (fraction of V0): the policy's per-symbol band, else band_abs."""
        if self.band_by_security is not None:
            return self.band_by_security
        return _frozen(np.full(self.n_securities, self.band_abs))

    @cached_property
    def band_grouped(self) -> np.ndarray:
        """Per security: is it banded with its substitute group (a member of a `band_membership`
        column) rather than on its own?"""
        return _frozen(self.band_membership.sum(axis=1) > 0)

    @cached_property
    def group_band(self) -> np.ndarray:
        """The band of each substitute group's total weight: its members' narrowest."""
        return _frozen(group_bands(self.band, self.band_membership))

    @property
    def model_loadings(self) -> np.ndarray:
        """The factor model's columns of `loadings` (systematic risk: the "risk" driver)."""
        return self.loadings[:, : self.risk_model_factors]

    @property
    def group_loadings(self) -> np.ndarray:
        """The substitute groups' shared-factor columns of `loadings` (part of "drift")."""
        return self.loadings[:, self.risk_model_factors:]

    @cached_property
    def never_buy(self) -> np.ndarray:
        return self.never_buy_mask if self.never_buy_mask is not None else _frozen(np.zeros(self.n_securities, bool))

    @cached_property
    def esg_excluded(self) -> np.ndarray:
        return self.esg_mask if self.esg_mask is not None else _frozen(np.zeros(self.n_securities, bool))

    def without_esg(self) -> RebalanceInput:
        """This input with the ESG screen lifted: nothing excluded, the targets before the screen
        (the explainer's coalitions with the "esg" driver off)."""
        from dataclasses import replace

        if self.esg_mask is None:
            return self
        target = self.target_weight if self.target_weight_without_esg is None else self.target_weight_without_esg
        return replace(self, esg_mask=None, target_weight=target, target_weight_without_esg=None)

    @cached_property
    def specific(self) -> np.ndarray:
        if self.risk_specific is None:
            return _frozen(np.ones(self.n_securities))
        return self.risk_specific

    @cached_property
    def band_membership(self) -> np.ndarray:
        if self.band_groups is None:
            return _frozen(np.zeros((self.n_securities, 0)))
        return self.band_groups

    @cached_property
    def impact(self) -> np.ndarray:
        return self.impact_coef if self.impact_coef is not None else _frozen(np.zeros(self.n_securities))

    @cached_property
    def harvestable(self) -> np.ndarray:
        if self.lot_harvestable is None:
            return _frozen(np.ones(self.n_lots, dtype=bool))
        return self.lot_harvestable

    @cached_property
    def lot_tax_objective(self) -> np.ndarray:
        """The tax term's coefficient: the true tax, with the benefit of unharvestable losses 0."""
        t = self.lot_tax_per_weight
        return _frozen(np.where(self.harvestable, t, np.maximum(t, 0.0)))

    @cached_property
    def lot_gain_per_weight(self) -> np.ndarray:
        """Realized gain per unit weight sold (1 - b/p), 0 outside taxable accounts."""
        if self.account_type != "taxable":
            return _frozen(np.zeros(self.n_lots))
        return _frozen(1.0 - self.lot_basis_usd_per_share / self.lot_price_usd)

    @cached_property
    def no_buy(self) -> np.ndarray:
        return self.wash_no_buy if self.wash_no_buy is not None else _frozen(np.zeros(self.n_securities, bool))

    @cached_property
    def no_sell_lot(self) -> np.ndarray:
        if self.wash_no_sell_lot is not None:
            return self.wash_no_sell_lot
        return _frozen(np.zeros(self.n_lots, bool))

    @cached_property
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
    def lot_cost_rate(self) -> np.ndarray:
        """`cost_rate` of each lot's security."""
        return _frozen(self.cost_rate[self.lot_security])

    @cached_property
    def active_weight(self) -> np.ndarray:
        """Deviation from target before trading: pre_weight - target_weight."""
        return _frozen(self.pre_weight - self.target_weight)

    @cached_property
    def lot_is_loss(self) -> np.ndarray:
        """Per lot: is it at a loss (price below basis)?"""
        return _frozen(self.lot_gain_usd_per_share < 0)

    @cached_property
    def lot_group_code(self) -> np.ndarray:
        """`group_code` of each lot's security."""
        return _frozen(self.group_code[self.lot_security])

    @cached_property
    def lot_alone_in_group(self) -> np.ndarray:
        """Per lot: is its security the only one of its wash group?"""
        return _frozen((np.bincount(self.group_code) == 1)[self.lot_group_code])

    @cached_property
    def ungrouped(self) -> np.ndarray:
        """Indices of the securities banded on their own (not in a `band_membership` column)."""
        return _frozen(np.flatnonzero(~self.band_grouped))

    @cached_property
    def ungrouped_band(self) -> np.ndarray:
        """`band` of the `ungrouped` securities."""
        return _frozen(self.band[self.ungrouped])

    @cached_property
    def band_peers(self) -> np.ndarray:
        """(n, n): do securities i and j share a substitute group (`band_membership` column)?"""
        M = self.band_membership
        return _frozen(M @ M.T > 0)

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
    def _lots_by_security(self) -> tuple[np.ndarray, np.ndarray]:
        """(lot indices grouped by security in the input's order, start of each security's run)."""
        order = np.argsort(self.lot_security, kind="stable")
        starts = np.searchsorted(self.lot_security[order], np.arange(self.n_securities + 1))
        return order, starts

    @cached_property
    def lot_rank(self) -> np.ndarray:
        """Position of each lot among its security's lots (its slot in the padded problem)."""
        order, starts = self._lots_by_security
        rank = np.empty(self.n_lots, dtype=np.int64)
        rank[order] = np.arange(self.n_lots) - np.repeat(starts[:-1], np.diff(starts))
        return _frozen(rank)

    def lot_slots(self, k: int) -> np.ndarray:
        """Each lot's slot in a problem padded to `k` lot slots per security: security * k +
        `lot_rank` (computed once per k)."""
        by_k = self.__dict__.setdefault("_lot_slots", {})
        out = by_k.get(k)
        if out is None:
            out = by_k[k] = _frozen(self.lot_security * k + self.lot_rank)
        return out

    def lots_of(self, i: int) -> np.ndarray:
        """Lot indices of security i, in the input's order."""
        order, starts = self._lots_by_security
        return order[starts[i]:starts[i + 1]]


def _f(x: object) -> float:
    return float(x)  # Decimal -> float, exact to double precision


def _long_term_before(trade_date: date) -> date:
    """`is_long_term(acquired_on, trade_date)` is `acquired_on < _long_term_before(trade_date)`.

    An anniversary never moves back as the acquisition date moves forward, so the long-term lots
    are those acquired before the first date whose anniversary is not before the trade date: the
    trade date one year earlier or, for a trade on 29 February, 1 March one year earlier (a lot
    of 28 February has its anniversary on 28 February, a lot of 1 March on 1 March).
    """
    try:
        return trade_date.replace(year=trade_date.year - 1)
    except ValueError:
        return date(trade_date.year - 1, 3, 1)


def from_snapshot(snapshot: AccountSnapshot, context: RebalanceContext | None = None, *,
                  screened_targets_ok: bool = False) -> RebalanceInput:
    """Validate `snapshot` (and `context`) and turn them into arrays; `InvalidSnapshot` if malformed.

    `screened_targets_ok`: a screened security may carry a target (household mode: the
    household's targets replace the account's, the account's screens stay buy bans)."""
    check_trade_date(snapshot)
    secs: dict[str, SecuritySnapshot] = {s.symbol: s for s in snapshot.securities}
    if len(secs) < len(snapshot.securities):
        sym = _first_repeat(s.symbol for s in snapshot.securities)
        raise InvalidSnapshot(f"security {sym} listed twice", symbol=sym)
    positions: dict[str, PositionSnapshot] = {p.symbol: p for p in snapshot.positions}
    if len(positions) < len(snapshot.positions):
        sym = _first_repeat(p.symbol for p in snapshot.positions)
        raise InvalidSnapshot(f"position {sym} listed twice", symbol=sym)
    for sym, w in snapshot.targets.items():
        if w < 0:
            raise InvalidSnapshot(f"target of {sym} is negative", symbol=sym)
    # Decimal -> float is the costliest step here: each number is converted once where possible.
    target_of = {sym: float(w) for sym, w in snapshot.targets.items()}
    total_target = sum(target_of.values(), 0.0)
    if total_target > 1.0 + 1e-9:
        raise InvalidSnapshot(f"targets sum to {total_target:.6f} > 1")

    before_esg = _screens(snapshot, screened_targets_ok)
    held = {sym for sym, p in positions.items() if p.lots or float(p.shares) > SHARES_EPS}
    universe = held | set(snapshot.targets)
    ctx = context or EMPTY_CONTEXT
    # Substitutes the snapshot prices join the problem when their group is held or targeted:
    # a harvested loss needs somewhere to keep its exposure.
    sub_groups = {ctx.info(s).substitute_group for s in universe} - {None}
    if sub_groups:
        universe |= {s for s in secs if ctx.info(s).substitute_group in sub_groups}
    # The symbols only the targets before the ESG screen name join last: the explainer's
    # coalitions without the screen need them, and they change nothing else (not the risk
    # model's normalization, not the substitutes: `_risk` looks at `core` only).
    core = frozenset(universe)
    universe |= {s for s, w in before_esg.items() if w > 0}
    symbols = tuple(sorted(universe))
    missing = [s for s in symbols if s not in secs]
    if missing:
        raise InvalidSnapshot(f"no price for {missing}", symbols=missing)
    securities = [secs[s] for s in symbols]
    prices = [float(sec.price_usd) for sec in securities]

    trade_date = snapshot.as_of.date()
    taxable = snapshot.account_type == "taxable"
    st, lt = _f(snapshot.tax_rates.short_term), _f(snapshot.tax_rates.long_term)

    lot_rows: list[tuple[int, date, str, float, float]] = []
    untracked: list[str] = []
    for i, sym in enumerate(symbols):
        pos = positions.get(sym)
        if pos is None:
            continue
        lot_total = 0.0
        for lot in pos.lots:
            acquired = lot.acquired_on
            if acquired > trade_date:
                raise InvalidSnapshot(f"lot {lot.lot_id} acquired after the snapshot", lot_id=lot.lot_id)
            shares = float(lot.shares)
            lot_rows.append((i, acquired, lot.lot_id, shares, float(lot.cost_basis_usd_per_share)))
            lot_total += shares
        rest = float(pos.shares) - lot_total
        if rest < -1e-6:
            raise InvalidSnapshot(f"lots of {sym} hold {lot_total} shares, the position {pos.shares}",
                                  symbol=sym)
        if rest > 1e-6:
            # Shares without lot detail: sellable, with no known gain (basis = price).
            lot_id = f"{sym}:untracked"
            lot_rows.append((i, trade_date, lot_id, rest, prices[i]))
            untracked.append(lot_id)
    # By security, acquisition date, lot id. Rows equal in all three share a lot id (refused
    # below), so comparing whole rows orders every accepted snapshot the same way.
    lot_rows.sort()
    lot_security, lot_acquired_on, lot_ids, lot_shares, lot_basis = (
        zip(*lot_rows, strict=True) if lot_rows else ((), (), (), (), ()))
    if len(set(lot_ids)) != len(lot_ids):
        raise InvalidSnapshot("lot ids are not unique")

    long_term_before = _long_term_before(trade_date)  # is_long_term, for every lot at once
    long_term = np.array([a < long_term_before for a in lot_acquired_on], dtype=bool)
    rates = np.where(long_term, lt, st) if taxable else np.zeros(len(lot_rows))

    def arr(values: Sequence[object], dtype: type = float) -> np.ndarray:
        return _frozen(np.array(values, dtype=dtype))

    restricted_set = set(snapshot.restricted)
    never_buy, esg = set(snapshot.never_buy), set(snapshot.esg_excluded)
    fields: dict[str, object] = dict(
        account_id=snapshot.account_id,
        account_type=snapshot.account_type,
        trade_date=trade_date,
        symbols=symbols,
        price_usd=arr(prices),
        target_weight=arr([target_of.get(s, 0.0) for s in symbols]),
        restricted=arr([s in restricted_set for s in symbols], bool),
        half_spread_bps=arr([float(sec.half_spread_bps) for sec in securities]),
        commission_usd_per_share=arr([float(sec.commission_usd_per_share) for sec in securities]),
        lot_ids=lot_ids,
        lot_security=arr(lot_security, np.int64),
        lot_shares=arr(lot_shares),
        lot_basis_usd_per_share=arr(lot_basis),
        lot_acquired_on=lot_acquired_on,
        lot_long_term=_frozen(long_term),
        lot_tax_rate=_frozen(np.asarray(rates, dtype=float)),
        cash_usd=_f(snapshot.cash_usd),
        cash_reserve_usd=_f(snapshot.cash_reserve_usd),
        band_abs=_f(snapshot.policy.band_abs),
        max_turnover=None if snapshot.policy.max_turnover is None else _f(snapshot.policy.max_turnover),
        untracked_lots=tuple(untracked),
        band_by_security=_bands(snapshot, symbols),
        never_buy_mask=arr([s in never_buy for s in symbols], bool) if never_buy else None,
        esg_mask=arr([s in esg for s in symbols], bool) if esg else None,
        target_weight_without_esg=arr([_f(before_esg.get(s, 0)) for s in symbols]) if before_esg else None,
        screen_only_mask=arr([s not in core for s in symbols], bool) if len(core) < len(symbols) else None,
    )
    inp = RebalanceInput(**fields)  # type: ignore[arg-type]
    _check_magnitudes(inp)
    if not inp.value_usd > 0:
        raise InvalidSnapshot(f"account value {inp.value_usd} is not positive")
    # The context's fields, the input built once more from the fields at hand (no `replace`).
    return _carry_derived(inp, RebalanceInput(**fields, **_context_fields(inp, ctx)))  # type: ignore[arg-type]


def _first_repeat(symbols: Iterable[str]) -> str:
    """The first symbol seen a second time (there is one)."""
    seen: set[str] = set()
    for sym in symbols:
        if sym in seen:
            return sym
        seen.add(sym)
    raise AssertionError("no symbol repeats")


def check_trade_date(snapshot: AccountSnapshot) -> None:
    """`InvalidSnapshot` unless the snapshot's `as_of` (its own calendar date) is in
    `limits.TRADE_YEARS`. Checked on the way in (here and by the optimizer's routes), not by the
    v1 event model: events already recorded must keep validating as they did."""
    problem = trade_year_problem(snapshot.as_of.date().year)
    if problem:
        raise InvalidSnapshot(f"as_of {snapshot.as_of.isoformat()} {problem}")


#: What a snapshot's numbers may be: far beyond any real account, well inside what a solver
#: handles (a price of 1e-300 or a cash balance of 1e400 made it fail, or answer nonsense). The
#: price range leaves room for the explainer's price counterfactuals (up to 20x the price: a
#: $700,000 share searched to $14M) and takes what market-data stores (down to 1e-6).
MAX_USD = 1e13  # cash, reserve, account value
PRICE_RANGE_USD = (1e-6, 1e9)  # a price or a lot's basis per share (basis may be 0)
MAX_SHARES = 1e12
MAX_HALF_SPREAD_BPS = 1e4
MAX_COMMISSION_USD_PER_SHARE = 1e3


#: (what, lowest, highest) of each number `_check_magnitudes` bounds, in the order it checks them.
#: A lot's shares and basis start at 0: these ranges are what refuses negative ones.
_MAGNITUDES = (
    ("a price", *PRICE_RANGE_USD),
    ("a lot's basis per share", 0.0, PRICE_RANGE_USD[1]),
    ("a lot's shares", 0.0, MAX_SHARES),
    ("a half spread (bps)", 0.0, MAX_HALF_SPREAD_BPS),
    ("a commission per share", 0.0, MAX_COMMISSION_USD_PER_SHARE),
    ("cash", -MAX_USD, MAX_USD),
    ("the cash reserve", 0.0, MAX_USD),
)
_MAGNITUDE_LOW = np.array([low for _, low, _ in _MAGNITUDES])
_MAGNITUDE_HIGH = np.array([high for _, _, high in _MAGNITUDES])


@lru_cache(maxsize=64)
def _magnitude_bounds(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest allowed value of each number `_check_magnitudes` concatenates, for n
    securities and m lots."""
    sizes = (n, m, m, n, n, 1, 1)
    return _frozen(np.repeat(_MAGNITUDE_LOW, sizes)), _frozen(np.repeat(_MAGNITUDE_HIGH, sizes))


def _check_magnitudes(inp: RebalanceInput) -> None:
    arrays = (inp.price_usd, inp.lot_basis_usd_per_share, inp.lot_shares, inp.half_spread_bps,
              inp.commission_usd_per_share, np.array([inp.cash_usd]), np.array([inp.cash_reserve_usd]))
    # Every number against its bounds in one pass (NaN and infinities fail the comparisons: the
    # bounds are finite); the first check failing, in `_MAGNITUDES`' order, names the problem.
    values = np.concatenate(arrays)
    low, high = _magnitude_bounds(inp.n_securities, inp.n_lots)
    inside = low <= values
    inside &= values <= high
    if np.count_nonzero(inside) < inside.size:
        for (what, lowest, highest), a in zip(_MAGNITUDES, arrays, strict=True):
            bad = ~np.isfinite(a) | (a < lowest) | (a > highest)
            if bad.any():
                raise InvalidSnapshot(f"{what} is outside [{lowest:g}, {highest:g}]: {float(a[bad][0]):g}")
    if not inp.value_usd <= MAX_USD:
        raise InvalidSnapshot(f"account value {inp.value_usd:g} is above {MAX_USD:g}")


def group_bands(band: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """Per substitute group (a column of the 0/1 `membership`): its members' narrowest band."""
    if not membership.shape[1]:
        return np.zeros(0)
    if not (membership > 0).any(axis=0).all():
        raise ValueError("a substitute group without a member has no band")
    return np.where(membership > 0, band[:, None], np.inf).min(axis=0)


def _bands(snapshot: AccountSnapshot, symbols: tuple[str, ...]) -> np.ndarray | None:
    """Per-security bands from the policy's `band_by_symbol` (None when it gives none)."""
    by_symbol = snapshot.policy.band_by_symbol
    if not by_symbol:
        return None
    default = _f(snapshot.policy.band_abs)
    return _frozen(np.array([_f(by_symbol[s]) if s in by_symbol else default for s in symbols]))


def _screens(snapshot: AccountSnapshot, screened_targets_ok: bool = False) -> dict[str, object]:
    """Check the snapshot's screens; the targets before the ESG screen ({} without one)."""
    esg = set(snapshot.esg_excluded)
    for sym in sorted(esg | set(snapshot.never_buy)):
        if float(snapshot.targets.get(sym, 0)) > 0 and not screened_targets_ok:
            raise InvalidSnapshot(f"{sym} is screened from buying but has a target", symbol=sym)
    before = snapshot.targets_before_esg
    if before is None:
        return {}
    if not esg:
        raise InvalidSnapshot("targets_before_esg without esg_excluded")
    if any(w < 0 for w in before.values()):
        raise InvalidSnapshot("a target before the ESG screen is negative")
    if sum((float(w) for w in before.values()), 0.0) > 1.0 + 1e-9:
        raise InvalidSnapshot("targets before the ESG screen sum to more than 1")
    return dict(before)


#: The specific variance a substitute keeps of its own when it stands in for another member of
#: its group (a fraction of the group's smallest): a swap inside the group costs only this.
SUBSTITUTE_RESIDUAL = 0.02


def _risk(inp: RebalanceInput, ctx: RebalanceContext,
          infos: Sequence[SecurityInfo]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Normalized loadings and specific variances (model columns, then one per substitute group),
    and the substitute groups' band membership. `infos`: `ctx.info` of each security."""
    n = inp.n_securities
    fm = ctx.factor_model
    screen_only = inp.screen_only_mask.tolist() if inp.screen_only_mask is not None else [False] * n
    if fm is None:
        L, d = np.zeros((n, 0)), np.ones(n)
    else:
        unknown: list[int] = []  # no model row
        if fm.symbols == inp.symbols:  # the model restricted to these symbols: rows in order
            modelled: Sequence[int] = range(n)
            L, d = np.ascontiguousarray(fm.loadings), fm.specific_var  # not written: scaled below
        else:
            row = dict(zip(fm.symbols, range(len(fm.symbols)), strict=True))
            modelled = [i for i, s in enumerate(inp.symbols) if s in row]
            unknown = [i for i, s in enumerate(inp.symbols) if s not in row]
            rows = [row[inp.symbols[i]] for i in modelled]
            L, d = np.zeros((n, fm.n_factors)), np.zeros(n)
            L[modelled], d[modelled] = fm.loadings[rows], fm.specific_var[rows]
        known = [i for i in modelled if not screen_only[i]]  # the scale: the account's own symbols
        total = np.add.reduce(L**2, axis=1) + d
        # Normalize so the average security's variance is 1: drift weight 1 then means the same
        # under a risk model as under the identity (a unit of squared weight deviation).
        scale = 1.0
        if known:
            # total[known].mean(): np.mean's own sum and division.
            mean = np.add.reduce(total if len(known) == n else total[known]) / len(known)
            if mean > 0:
                scale = float(mean)
        L, d = L / math.sqrt(scale), d / scale  # new arrays (math.sqrt: IEEE sqrt, like np.sqrt)
        if unknown:
            d[unknown] = 1.0  # no model row: the average security's variance, uncorrelated
    subs: dict[str, list[int]] = {}
    for i, info in enumerate(infos):
        g = info.substitute_group
        if g is not None and not screen_only[i]:
            subs.setdefault(g, []).append(i)
    multi = [members for _, members in sorted(subs.items()) if len(members) >= 2]
    if not multi and fm is None:
        return None, None, None
    M = np.zeros((n, len(multi)))
    if multi:
        # Group j (its members: a run of `member`) shares a factor of variance `shared` (column
        # j of M, column k + j of L), taken from each member's specific variance. The groups
        # do not overlap: every member's row gets one column.
        starts, in_order = [], []  # where each group's run begins, the members run after run
        for members in multi:
            starts.append(len(in_order))
            in_order += members
        member = np.array(in_order)
        group = np.array([j for j, members in enumerate(multi) for _ in members])
        d_member = d[member]
        # Each group's smallest specific variance: d[members].min(), the same reduction per run.
        shared = (1.0 - SUBSTITUTE_RESIDUAL) * np.minimum.reduceat(d_member, starts)
        shared_of_member = shared[group]
        k = L.shape[1]
        with_groups = np.zeros((n, k + len(multi)))
        with_groups[:, :k] = L
        with_groups[member, k + group] = np.sqrt(shared_of_member)
        d[member] = d_member - shared_of_member
        M[member, group] = 1.0
        L = with_groups
    return _frozen(L), _frozen(d), (_frozen(M) if multi else None)


def _context_fields(inp: RebalanceInput, ctx: RebalanceContext) -> dict[str, object]:
    """The fields of `RebalanceInput` the context gives: risk model, impact, groups, wash-sale
    bans, mandate."""
    n, m = inp.n_securities, inp.n_lots
    infos = [ctx.info(s) for s in inp.symbols]
    groups = tuple([info.wash_group or s for info, s in zip(infos, inp.symbols, strict=True)])
    L, d, M = _risk(inp, ctx, infos)
    # Market impact b sigma sqrt(V0 / ADV), where the context gives sigma and ADV (else 0).
    priced = [i for i, info in enumerate(infos) if info.sigma_daily and info.adv_usd]
    b, V0 = ctx.impact_b, inp.value_usd
    impact = (np.array([b * infos[i].sigma_daily for i in priced])  # type: ignore[operator]
              * np.sqrt(np.array([V0 / infos[i].adv_usd for i in priced])))  # type: ignore[operator]
    if len(priced) < n:
        impact, priced_impact = np.zeros(n), impact
        impact[priced] = priced_impact
    loss = inp.lot_basis_usd_per_share - inp.lot_price_usd  # per share, > 0 for a loss
    loss_usd = loss * inp.lot_shares
    loss_pct = np.divide(loss, inp.lot_basis_usd_per_share, out=np.zeros(m),
                         where=inp.lot_basis_usd_per_share > 0)
    gain = loss <= 0
    harvestable = gain | ((loss_usd >= ctx.harvest_min_loss_usd) & (loss_pct >= ctx.harvest_min_loss_pct))
    # Household wash-sale windows (30 days before the trade date; the 30 days after are the
    # next proposals' business, through this same feed).
    trade_date = inp.trade_date
    try:
        window_start = trade_date - timedelta(days=WASH_WINDOW_DAYS)
    except OverflowError:  # a trade date in the first days of year 1: all dates up to it are in
        window_start = date.min
    lossy_groups = {ctx.info(t.symbol).wash_group or t.symbol for t in ctx.recent_trades
                    if t.side == "sell" and t.realized_loss and window_start <= t.trade_date <= trade_date}
    bought_groups = {ctx.info(t.symbol).wash_group or t.symbol for t in ctx.recent_trades
                     if t.side == "buy" and window_start <= t.trade_date <= trade_date}
    no_buy = np.array([g in lossy_groups for g in groups], dtype=bool)
    # A loss lot may not be sold when its group was bought in the window: by the household, or
    # by this account (a lot of the group acquired inside the window, for every *other* loss
    # lot of the group: a lot is not its own replacement).
    untracked = set(inp.untracked_lots)
    own_recent: dict[str, set[int]] = {}
    for lot, acquired in enumerate(inp.lot_acquired_on):
        if window_start <= acquired <= trade_date and inp.lot_ids[lot] not in untracked:
            own_recent.setdefault(groups[inp.lot_security[lot]], set()).add(lot)
    loss_lot = ~gain
    no_sell = loss_lot & np.array([g in bought_groups for g in groups], dtype=bool)[inp.lot_security]
    for lot in np.flatnonzero(loss_lot).tolist() if own_recent else ():
        others = own_recent.get(groups[inp.lot_security[lot]], ())  # others than this lot?
        if len(others) > 1 or (others and lot not in others):
            no_sell[lot] = True
    return dict(
        wash_group=groups, risk_loadings=L, risk_specific=d, band_groups=M,
        risk_model_factors=ctx.factor_model.n_factors if ctx.factor_model is not None else 0,
        impact_coef=_frozen(impact) if impact.any() else None,
        lot_harvestable=_frozen(harvestable), wash_no_buy=_frozen(no_buy),
        wash_no_sell_lot=_frozen(no_sell), tax_budget_usd=ctx.tax_budget_usd,
        gain_cap_usd=ctx.gain_cap_usd, mode=ctx.mode, withdrawal_usd=float(ctx.withdrawal_usd),
    )


#: Cached properties of `RebalanceInput` that depend on none of the fields `_context_fields` sets.
_SNAPSHOT_DERIVED = ("shares", "holdings_usd", "value_usd", "lot_price_usd")


def _carry_derived(inp: RebalanceInput, out: RebalanceInput) -> RebalanceInput:
    """`out` (`inp` with the context's fields) keeps what `inp` already derived from the others
    (the snapshot's checks computed the account's value): not computed twice."""
    for name in _SNAPSHOT_DERIVED:
        if name in vars(inp):
            vars(out)[name] = vars(inp)[name]
    return out
