"""Scenarios with hand-computed answers, and the typed reasons of infeasible mandates.

Every scenario states its arithmetic in the test; the optimizer must find it by itself.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from trimtab.rebalance import (
    DEFAULT_DRIVER_WEIGHTS,
    FactorModel,
    HouseholdTrade,
    InfeasibleProblem,
    RebalanceContext,
    SecurityInfo,
    from_snapshot,
    propose,
    solve_continuous,
)

from .conftest import AS_OF, make_snapshot
from .test_proposal import assert_valid, cash_after_orders, lot_arithmetic_tax

ALL_ON = dict(DEFAULT_DRIVER_WEIGHTS)


def sold_lots(p) -> dict[str, Decimal]:  # type: ignore[no-untyped-def]
    return {li.lot_id: li.shares for o in p.orders if o.side == "sell" for li in o.lots}


def bought(p) -> dict[str, Decimal]:  # type: ignore[no-untyped-def]
    return {o.symbol: o.shares for o in p.orders if o.side == "buy"}


# ---------------------------------------------------------------- tax-loss harvesting


def _harvest_account():  # type: ignore[no-untyped-def]
    # VTI at $50 held in one short-term lot bought at $80: a $3,000 loss (100 shares), worth
    # 0.37 x 3,000 = $1,110 of tax. ITOT tracks the same market (same substitute group) but is
    # not substantially identical (its own wash group). The account is on target (50/50).
    return make_snapshot(
        prices={"VTI": 50.0, "ITOT": 25.0, "BND": 100.0},
        holdings={"VTI": [(100, 80.0, 100)], "BND": [(50, 100.0, 900)]},
        targets={"VTI": 0.5, "BND": 0.5}, cash=0.0, half_spread_bps=1.0,
    )


def _groups(same_wash_group: bool = False, **kwargs: object) -> RebalanceContext:
    return RebalanceContext(securities={
        "VTI": SecurityInfo(substitute_group="us-total", wash_group="us-total" if same_wash_group else None),
        "ITOT": SecurityInfo(substitute_group="us-total", wash_group="us-total" if same_wash_group else None),
    }, **kwargs)  # type: ignore[arg-type]


def test_a_loss_is_harvested_into_a_substitute_of_the_same_group() -> None:
    snap = _harvest_account()
    p = propose(snap, context=_groups())
    assert_valid(snap, p)
    # Hand-computed: the whole VTI lot is sold ($5,000 at a $3,000 short-term loss). ITOT keeps
    # the exposure: the group's shared factor makes the swap no drift, except the 2 % of specific
    # variance each member keeps (SUBSTITUTE_RESIDUAL), so ITOT stops at (1 - 0.02) x 50 % of
    # $10,000 = $4,900: 196 shares. The residual costs 0.02 x (0.5^2 x 0.98) ~ 0.5 % of the
    # account in the objective's units, the tax benefit is 1,110 / 10,000 = 11 %.
    assert sold_lots(p) == {"VTI-1": Decimal(100)}
    assert bought(p) == {"ITOT": Decimal(196)}
    assert p.est_tax_usd == Decimal("-1110.00") == lot_arithmetic_tax(snap, list(p.orders))
    assert p.tax["harvested_loss_usd"] == Decimal("3000.00")
    assert p.tax["short_term_gain_usd"] == Decimal("-3000.00")
    assert any("harvested" in n for n in p.notes)


def test_without_a_substitute_the_harvest_stops_at_the_band() -> None:
    # Same account, no substitute: the loss pays 0.37 x 37.5 % = 13.9 % of each dollar sold,
    # more than the squared drift costs, but less than the band penalty (1 per unit of weight
    # beyond the 5 % band): VTI is sold to the band edge, 5 % of $10,000 = 10 shares, and the
    # wash-sale rule keeps the proceeds out of VTI.
    snap = _harvest_account()
    p = propose(snap)
    assert sold_lots(p) == {"VTI-1": Decimal(10)}
    assert "VTI" not in bought(p)


def test_substantially_identical_securities_are_not_a_substitute() -> None:
    # One wash group: selling VTI at a loss and buying ITOT would be a wash sale.
    p = propose(_harvest_account(), context=_groups(same_wash_group=True))
    assert not (sold_lots(p) and bought(p).get("ITOT"))


@pytest.mark.parametrize("account, days", [("ira-7", 10), ("acct-1", 29)])
def test_a_household_buy_in_the_last_30_days_blocks_the_harvest(account: str, days: int) -> None:
    # A buy of VTI in any account of the household (an IRA included) within 30 days: selling the
    # lot at a loss now would be a wash sale.
    ctx = _groups(recent_trades=(HouseholdTrade(account, "VTI", "buy", AS_OF.date() - timedelta(days=days)),))
    p = propose(_harvest_account(), context=ctx)
    assert "VTI-1" not in sold_lots(p)


def test_a_household_loss_sale_in_the_last_30_days_blocks_buying_the_group() -> None:
    # ITOT was sold at a loss in the spouse's account 5 days ago: no ITOT may be bought now, so
    # the harvest has no substitute and does not happen.
    ctx = _groups(recent_trades=(HouseholdTrade("spouse", "ITOT", "sell", AS_OF.date() - timedelta(days=5),
                                                realized_loss=True),))
    p = propose(_harvest_account(), context=ctx)
    assert "ITOT" not in bought(p)
    # 31 days ago is outside the window: the harvest is back.
    ctx_old = _groups(recent_trades=(HouseholdTrade("spouse", "ITOT", "sell", AS_OF.date() - timedelta(days=31),
                                                    realized_loss=True),))
    assert bought(propose(_harvest_account(), context=ctx_old)) == {"ITOT": Decimal(196)}


def test_losses_under_the_harvest_thresholds_earn_no_benefit() -> None:
    p = propose(_harvest_account(), context=_groups(harvest_min_loss_usd=5_000.0))
    assert sold_lots(p) == {}
    p = propose(_harvest_account(), context=_groups(harvest_min_loss_pct=0.5))  # the loss is 37.5 %
    assert sold_lots(p) == {}


# ---------------------------------------------------------------- withdrawal, budget, cap


def _one_security_account(**kwargs: object):  # type: ignore[no-untyped-def]
    # X at $100 in three lots: L50 (basis 50, long-term: gain 50, tax 0.20 x 50 = $10/share),
    # S95 (basis 95, short-term: gain 5, tax 0.37 x 5 = $1.85/share), LOSS (basis 120,
    # long-term: loss 20, tax -$4/share). On target (100 % X), no cash.
    return make_snapshot(prices={"X": 100.0},
                         holdings={"X": [(100, 50.0, 900), (100, 95.0, 100), (30, 120.0, 800)]},
                         targets={"X": 1.0}, cash=0.0, **kwargs)  # type: ignore[arg-type]


def test_a_withdrawal_is_raised_with_the_least_tax() -> None:
    snap = _one_security_account()
    p = propose(snap, context=RebalanceContext(withdrawal_usd=5_000.0))
    assert_valid(snap, p)
    # $5,000 plus 2 bp of spread needs 5000 / (100 x 0.9998) = 50.01 shares, so 51 whole shares:
    # the 30 loss shares first (they pay $4 each), then 21 of S95 ($1.85 each); L50 untouched.
    assert sold_lots(p) == {"X-3": Decimal(30), "X-2": Decimal(21)}
    assert p.est_tax_usd == Decimal(30) * -4 + Decimal(21) * Decimal("1.85") == Decimal("-81.15")
    assert cash_after_orders(snap, list(p.orders)) >= Decimal(5_000)


def test_a_tax_budget_that_binds() -> None:
    # Only L50 can fund the target move: X overweight (target 50 %, cash target the rest). Without
    # a budget the sale is ~1/2 of the account; a $300 budget allows 300 / 10 = 30 shares of L50
    # (after the loss lot, whose $120 benefit raises the allowance by 12 shares of L50).
    snap = make_snapshot(prices={"X": 100.0, "Y": 100.0},
                         holdings={"X": [(100, 50.0, 900), (30, 120.0, 800)]},
                         targets={"X": 0.3, "Y": 0.7}, cash=0.0)
    free = propose(snap)
    assert lot_arithmetic_tax(snap, list(free.orders)) > 300
    p = propose(snap, context=RebalanceContext(tax_budget_usd=300.0))
    assert_valid(snap, p)
    lots = sold_lots(p)
    assert lots["X-2"] == 30  # the loss lot goes first
    # 30 x (-4) + q x 10 <= 300  ->  q <= 42; whole shares, at most one short of the bound.
    assert 41 <= lots["X-1"] <= 42
    tax = lot_arithmetic_tax(snap, list(p.orders))
    assert tax <= 300 and p.est_tax_usd == tax.quantize(Decimal("0.01"))


def test_a_hard_gain_cap_limits_the_net_gain() -> None:
    snap = make_snapshot(prices={"X": 100.0, "Y": 100.0}, holdings={"X": [(100, 50.0, 900)]},
                         targets={"X": 0.3, "Y": 0.7}, cash=0.0)
    p = propose(snap, context=RebalanceContext(gain_cap_usd=1_000.0))
    gain = sum((li.shares * 50 for o in p.orders if o.side == "sell" for li in o.lots), Decimal(0))
    assert 950 <= gain <= 1_000  # 20 shares of $50 gain, whole shares


@pytest.mark.parametrize("ctx, constraint", [
    (RebalanceContext(withdrawal_usd=5_000.0, tax_budget_usd=-500.0), "tax_budget"),
    # $20,000 needs 200 shares: 30 LOSS (-$600) + 100 S95 (+$500) + 70 L50 (+$3,500) > $0.
    (RebalanceContext(withdrawal_usd=20_000.0, gain_cap_usd=0.0), "gain_cap"),
    (RebalanceContext(withdrawal_usd=5_000.0, mode="buy_only"), "mode"),
    (RebalanceContext(withdrawal_usd=50_000.0), "withdrawal"),
])
def test_infeasible_mandates_name_their_constraint(ctx: RebalanceContext, constraint: str) -> None:
    # The account is worth $23,000. A $5,000 withdrawal costs at least -$81.15 of tax (above).
    with pytest.raises(InfeasibleProblem) as err:
        propose(_one_security_account(), context=ctx)
    assert err.value.constraint == constraint


def test_buy_only_and_sell_only_modes() -> None:
    snap = make_snapshot(prices={"A": 100.0, "B": 100.0}, holdings={"A": 80, "B": 10},
                         targets={"A": 0.5, "B": 0.5}, cash=1_000.0)
    buy_only = propose(snap, context=RebalanceContext(mode="buy_only"))
    assert all(o.side == "buy" for o in buy_only.orders) and bought(buy_only)["B"] == 9
    sell_only = propose(snap, context=RebalanceContext(mode="sell_only"))
    assert sell_only.orders and all(o.side == "sell" for o in sell_only.orders)


# ---------------------------------------------------------------- impact and risk model


def test_market_impact_slows_a_large_trade() -> None:
    snap = make_snapshot(prices={"A": 100.0, "B": 100.0}, holdings={"A": 9_000, "B": 1_000},
                         targets={"A": 0.5, "B": 0.5}, cash=0.0, account_type="tax_deferred")
    inp_free = from_snapshot(snap)
    # A $1M account against $2M of daily volume at 2 % daily vol: b sigma sqrt(V0/ADV) = 0.0141.
    ctx = RebalanceContext(securities={s: SecurityInfo(sigma_daily=0.02, adv_usd=2e6) for s in ("A", "B")})
    inp = from_snapshot(snap, ctx)
    assert inp.impact == pytest.approx(np.full(2, 0.02 * np.sqrt(1e6 / 2e6)))
    free = solve_continuous(inp_free, ALL_ON).trade_shares
    slow = solve_continuous(inp, ALL_ON)
    assert abs(slow.trade_shares[0]) < abs(free[0]) - 50
    assert slow.terms["cost"] > 0


def test_the_drift_term_uses_the_factor_model() -> None:
    # A and B have the same factor loading and tiny specific risk: holding A instead of B is
    # almost no active risk, so (inside the band) the factor model trades far less than identity.
    snap = make_snapshot(prices={"A": 100.0, "B": 100.0, "C": 100.0}, holdings={"A": 370, "B": 300, "C": 330},
                         targets={"A": 0.33, "B": 0.34, "C": 0.33}, cash=0.0, account_type="tax_deferred",
                         band=0.1)
    fm = FactorModel(symbols=("A", "B", "C"), loadings=np.array([[0.2, 0.0], [0.2, 0.0], [0.0, 0.2]]),
                     specific_var=np.array([1e-4, 1e-4, 0.04]))
    identity = solve_continuous(from_snapshot(snap), ALL_ON).trade_shares
    factor = solve_continuous(from_snapshot(snap, RebalanceContext(factor_model=fm)), ALL_ON).trade_shares
    assert abs(identity[0]) > 30
    assert abs(factor[0]) < 0.2 * abs(identity[0])
