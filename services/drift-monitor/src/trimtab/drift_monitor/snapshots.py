"""From a stored account to what leaves the service: its exact drift, the AccountSnapshot the
optimizer needs, the DriftDetected event and the API's drift view.

Weights and deviations are computed exactly (Decimal) and rounded only here, at the edge, to
10 places; the decision to fire is taken on the unrounded values.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row

from trimtab.shared.events import (
    AccountSnapshot,
    DriftDetected,
    DriftPolicy,
    LotSnapshot,
    PositionSnapshot,
    SecuritySnapshot,
    TaxRates,
)
from trimtab.shared.money import usd

from .book import Book
from .domain.drift import RULE, DriftResult, drift_of, relevant_symbols
from .schemas import DriftOut

WEIGHT_Q = Decimal("0.0000000001")

Prices = dict[str, Row[Any]]


def _w(x: Decimal) -> Decimal:
    return x.quantize(WEIGHT_Q)


def drift_for(book: Book, prices: Prices) -> DriftResult:
    a = book.account
    return drift_of(a.cash_usd, book.shares_by_symbol(), book.targets,
                    {s: p.price_usd for s, p in prices.items()}, a.band_abs)


def build_snapshot(book: Book, prices: Prices, as_of: datetime) -> AccountSnapshot:
    """The full state of one account as of `as_of`; every relevant symbol must have a price."""
    a = book.account
    shares = book.shares_by_symbol()
    symbols = relevant_symbols(shares, book.targets)
    by_symbol: dict[str, list[LotSnapshot]] = {}
    for lot in book.lots:
        by_symbol.setdefault(lot.symbol, []).append(LotSnapshot(
            lot_id=lot.lot_id, shares=lot.shares, cost_basis_usd_per_share=lot.cost_basis_usd_per_share,
            acquired_on=lot.acquired_on))
    positions = [PositionSnapshot(symbol=s, shares=shares[s], lots=by_symbol.get(s, []))
                 for s in sorted(shares) if shares[s] != 0]
    securities = [SecuritySnapshot(
        symbol=s, price_usd=prices[s].price_usd, asset_class=prices[s].asset_class,
        half_spread_bps=prices[s].half_spread_bps,
        commission_usd_per_share=prices[s].commission_usd_per_share) for s in symbols]
    return AccountSnapshot(
        account_id=a.account_id, household_id=a.household_id, account_type=a.account_type,
        model_id=a.model_id, cash_usd=a.cash_usd, cash_reserve_usd=a.cash_reserve_usd,
        positions=positions, targets={s: w for s, w in sorted(book.targets.items())},
        securities=securities, restricted=list(a.restricted or []),
        policy=DriftPolicy(band_abs=a.band_abs, automation=a.automation, max_turnover=a.max_turnover),
        tax_rates=TaxRates(short_term=a.tax_short_term, long_term=a.tax_long_term),
        as_of=as_of,
    )


def drift_event(book: Book, prices: Prices, result: DriftResult, as_of: datetime,
                drift_id: uuid.UUID) -> DriftDetected:
    return DriftDetected(
        drift_id=drift_id, account_id=book.account_id,
        snapshot=build_snapshot(book, prices, as_of),
        total_value_usd=usd(result.total_value_usd),
        weights={s: _w(w) for s, w in result.weights.items()},
        deviations={s: _w(d) for s, d in result.deviations.items()},
        max_abs_deviation=_w(result.max_abs_deviation),
        rule=RULE, breached=list(result.breached),
    )


def drift_view(book: Book, prices: Prices) -> DriftOut:
    a = book.account
    r = drift_for(book, prices)
    known = [prices[s].as_of for s in r.targets if s in prices]
    return DriftOut(
        account_id=a.account_id, as_of=max(known) if known else None,
        total_value_usd=usd(r.total_value_usd) if r.measurable else None, cash_usd=a.cash_usd,
        weights={s: _w(w) for s, w in r.weights.items()},
        targets={s: w for s, w in r.targets.items()},
        deviations={s: _w(d) for s, d in r.deviations.items()},
        max_abs_deviation=_w(r.max_abs_deviation) if r.measurable else None,
        band_abs=a.band_abs, rule=r.rule, breached=list(r.breached),
        missing_prices=list(r.missing_prices), drift_state=a.drift_state,
        pending_drift_id=a.pending_drift_id,
    )
