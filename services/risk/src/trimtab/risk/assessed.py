"""The `risk.assessed.v1` payload of a proposal: what the assessment measured, as published.

Pure: the numbers come from the assessment already computed (`domain.assessment.assess`) and its
measures as stored (`analytics.measures_out`), so the event, the stored assessment and the API
agree to the digit. Percentages carry 4 places, weights 6, USD amounts cents (half to even).

USD figures are the loss fraction times the account's value: before the trades the snapshot's
cash plus its positions at the snapshot's prices; after, that value minus the proposal's
estimated cost (the optimizer's post-trade weights are fractions of that value). A position
without a price in the snapshot leaves the value, and every USD figure, out.
"""

from __future__ import annotations

from decimal import Decimal

from trimtab.shared.events import AccountSnapshot, RebalanceProposed, RiskAssessed, RiskModelInfo
from trimtab.shared.money import usd

from .domain.assessment import Assessment, Limits
from .schemas import RiskMeasuresOut

VAR_KEY, CVAR_KEY = "var_95_1d", "cvar_95_1d"
WEIGHT = Decimal("0.000001")


def snapshot_value_usd(snapshot: AccountSnapshot) -> Decimal | None:
    """Cash plus every position at the snapshot's price; None if a held position has no price."""
    prices = {s.symbol: s.price_usd for s in snapshot.securities}
    value = snapshot.cash_usd
    for pos in snapshot.positions:
        if pos.shares == 0:
            continue
        price = prices.get(pos.symbol)
        if price is None:
            return None
        value += pos.shares * price
    return value if value > 0 else None


def _loss_usd(fraction: float | None, value: Decimal | None) -> Decimal | None:
    if fraction is None or value is None:
        return None
    return usd(Decimal(repr(float(fraction))) * value)


def applied_limits(limits: Limits) -> dict[str, Decimal]:
    return {"vol_increase_limit_pct": limits.vol_increase_pct,
            "concentration_limit": limits.concentration_limit,
            "sector_limit": limits.sector_limit}


def assessed_event(
    p: RebalanceProposed, result: Assessment, info: RiskModelInfo, limits: Limits,
    pre_m: RiskMeasuresOut, post_m: RiskMeasuresOut,
) -> RiskAssessed:
    """The event of one assessment (`pre_m`/`post_m`: `measures_out` of `result.pre`/`post`)."""
    assert result.pre is not None and result.post is not None
    pre_value = snapshot_value_usd(p.snapshot)
    post_value = None
    if pre_value is not None and pre_value - p.est_cost_usd > 0:
        post_value = pre_value - p.est_cost_usd
    largest = result.max_post_symbol if result.max_post_weight > 0 else None
    sector_weight = (Decimal(repr(result.post.largest_sector_weight)).quantize(WEIGHT)
                     if result.post.largest_sector is not None else None)
    return RiskAssessed(
        proposal_id=p.proposal_id, account_id=p.account_id,
        pre_vol_annual_pct=result.pre_vol_annual_pct, post_vol_annual_pct=result.post_vol_annual_pct,
        model=info, flags=list(result.flags),
        pre_score=result.pre.score, post_score=result.post.score, tolerance_score=result.tolerance_score,
        pre_value_usd=None if pre_value is None else usd(pre_value),
        post_value_usd=None if post_value is None else usd(post_value),
        pre_var_95_1d_pct=pre_m.parametric_pct.get(VAR_KEY),
        post_var_95_1d_pct=post_m.parametric_pct.get(VAR_KEY),
        pre_var_95_1d_usd=_loss_usd(result.pre.parametric.get(VAR_KEY), pre_value),
        post_var_95_1d_usd=_loss_usd(result.post.parametric.get(VAR_KEY), post_value),
        pre_cvar_95_1d_usd=_loss_usd(result.pre.parametric.get(CVAR_KEY), pre_value),
        post_cvar_95_1d_usd=_loss_usd(result.post.parametric.get(CVAR_KEY), post_value),
        pre_tracking_error_annual_pct=pre_m.tracking_error_annual_pct,
        post_tracking_error_annual_pct=post_m.tracking_error_annual_pct,
        post_largest_symbol=largest,
        post_largest_weight=result.max_post_weight.quantize(WEIGHT) if largest else None,
        post_largest_sector=result.post.largest_sector, post_largest_sector_weight=sector_weight,
        breaches=list(result.breaches), limits=applied_limits(limits),
    )
