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
    OptimizerContext,
    PositionSnapshot,
    SecuritySnapshot,
    TaxRates,
)
from trimtab.shared.money import usd

from .book import Book
from .domain.rules import Evaluation, Policy, effective_targets, evaluate, relevant_symbols
from .schemas import DriftOut, PolicyOut

WEIGHT_Q = Decimal("0.0000000001")

Prices = dict[str, Row[Any]]


def _w(x: Decimal) -> Decimal:
    return x.quantize(WEIGHT_Q)


def drift_for(book: Book, prices: Prices) -> Evaluation:
    return evaluate(book.state(), {s: p.price_usd for s, p in prices.items()})


def policy_out(p: Policy) -> PolicyOut:
    return PolicyOut(band_abs=p.band_abs, band_rel=p.band_rel, band_rule=p.band_rule,
                     portfolio_band=p.portfolio_band, trade_back_band=p.trade_back_band,
                     min_interval_days=p.min_interval_days, cash_trigger_usd=p.cash_trigger_usd,
                     automation=p.automation, max_turnover=p.max_turnover, max_tax_usd=p.max_tax_usd)


def build_snapshot(book: Book, prices: Prices, as_of: datetime,
                   applied_executions: list[str] | None = None) -> AccountSnapshot:
    """The full state of one account as of `as_of`; every relevant symbol must have a price.

    Within the current contract: targets are the effective ones (never-buy / ESG symbols at 0
    weight, spread over the rest), `restricted` the never-trade symbols, `cash_reserve_usd` the
    reserve plus open withdrawal requests (what the optimizer must raise), `policy.band_abs` the
    trade-back band."""
    a = book.account
    shares = book.shares_by_symbol()
    targets = book.targets
    policy = book.policy
    symbols = relevant_symbols(shares, targets)
    # The ESG screen, and what the targets would be without it (for the explainer to say what the
    # screen changed): sent only when every symbol it would hold is priced here.
    esg = sorted(set(a.esg_excluded or []))
    before_esg = effective_targets(book.base_targets, frozenset(a.never_buy or [])) if esg else None
    if before_esg is not None and all(s in prices for s, w in before_esg.items() if w > 0):
        symbols = sorted(set(symbols) | {s for s, w in before_esg.items() if w > 0})
    else:
        before_esg = None
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
        commission_usd_per_share=prices[s].commission_usd_per_share, price_as_of=prices[s].as_of)
        for s in symbols]
    return AccountSnapshot(
        account_id=a.account_id, household_id=a.household_id, account_type=a.account_type,
        model_id=a.model_id, cash_usd=a.cash_usd, cash_reserve_usd=a.cash_reserve_usd + book.withdrawal_usd,
        positions=positions, targets={s: w for s, w in sorted(targets.items())},
        securities=securities, restricted=list(a.restricted or []),
        policy=DriftPolicy(band_abs=policy.snapshot_band(targets), automation=policy.automation,
                           max_turnover=policy.max_turnover, band_by_symbol=policy.snapshot_bands(targets)),
        tax_rates=TaxRates(short_term=a.tax_short_term, long_term=a.tax_long_term),
        as_of=as_of,
        never_buy=sorted(set(a.never_buy or []) - set(a.restricted or [])), esg_excluded=esg,
        targets_before_esg=({s: w for s, w in sorted(before_esg.items()) if w > 0}
                            if before_esg is not None else None),
        applied_executions=applied_executions,
    )


def optimizer_context(book: Book) -> OptimizerContext | None:
    """What the policy tells the optimizer beyond the snapshot: the tax a proposal may realize
    (`max_tax_usd` -> the context's tax budget). Open withdrawals are not repeated here: they are
    already in the snapshot's `cash_reserve_usd` (the context's `withdrawal_usd` would be raised
    on top of it). None when the policy sets nothing the snapshot does not carry."""
    max_tax = book.policy.max_tax_usd
    return None if max_tax is None else OptimizerContext(tax_budget_usd=max_tax)


def drift_event(book: Book, prices: Prices, result: Evaluation, rule: str, as_of: datetime,
                drift_id: uuid.UUID, applied_executions: list[str] | None = None) -> DriftDetected:
    return DriftDetected(
        drift_id=drift_id, account_id=book.account_id,
        snapshot=build_snapshot(book, prices, as_of, applied_executions),
        total_value_usd=usd(result.total_value_usd),
        weights={s: _w(w) for s, w in result.weights.items()},
        deviations={s: _w(d) for s, d in result.deviations.items()},
        max_abs_deviation=_w(result.max_abs_deviation),
        rule=rule, breached=list(result.breached), context=optimizer_context(book),
        advisor_id=getattr(book.account, "advisor_id", None),
    )


def drift_view(book: Book, prices: Prices, would_fire: bool = False, held_back_by: str | None = None) -> DriftOut:
    a = book.account
    r = drift_for(book, prices)
    p = book.policy
    known = [prices[s].as_of for s in r.targets if s in prices]
    ok = r.measurable
    return DriftOut(
        account_id=a.account_id, as_of=max(known) if known else None,
        total_value_usd=usd(r.total_value_usd) if ok else None, cash_usd=a.cash_usd,
        weights={s: _w(w) for s, w in r.weights.items()},
        targets={s: w for s, w in r.targets.items()},
        deviations={s: _w(d) for s, d in r.deviations.items()},
        max_abs_deviation=_w(r.max_abs_deviation) if ok else None,
        band_abs=p.band_abs, bands={s: _w(b) for s, b in r.bands.items()},
        rule=r.rule, rules=list(r.rules), would_fire=would_fire, held_back_by=held_back_by,
        breached=list(r.breached),
        portfolio_drift=_w(r.portfolio_drift) if r.portfolio_drift is not None else None,
        cash_weight=_w(r.cash_weight) if r.cash_weight is not None else None,
        cash_target_weight=_w(r.cash_target_weight),
        uninvested_cash_usd=usd(r.uninvested_cash_usd) if r.uninvested_cash_usd is not None else None,
        withdrawal_shortfall_usd=usd(r.withdrawal_shortfall_usd),
        missing_prices=list(r.missing_prices), drift_state=a.drift_state,
        pending_drift_id=a.pending_drift_id, policy=policy_out(p),
    )
