"""Property tests with the full context: whatever the household and the mandate, a proposal
either names the constraint it cannot meet or passes every rule.

Checked on the Decimal orders, from the snapshot and the context alone (not the library's own
arrays): never sells more than a lot holds, cash after orders covers reserve plus withdrawal,
no wash sale across the household (no buy in a group with a loss sale in the last 30 days, no
loss sale in a group bought in the last 30 days, never a loss sold and the group bought in the
same proposal), restricted untouched, modes respected, the tax estimate and its breakdown equal
the lot arithmetic, tax budget and gain cap respected.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trimtab.rebalance import (
    HouseholdTrade,
    InfeasibleProblem,
    RebalanceContext,
    SecurityInfo,
    propose,
)

from .conftest import AS_OF, make_snapshot
from .test_proposal import assert_valid, cash_after_orders, lot_arithmetic_tax

SYMBOLS = ["AA", "AB", "BA", "BB", "CC", "DD"]
#: AA/AB and BA/BB are substitute pairs (each its own wash group); CC and DD stand alone.
SUBSTITUTE = {"AA": "A", "AB": "A", "BA": "B", "BB": "B"}
CONSTRAINTS = {"cash_reserve", "withdrawal", "tax_budget", "gain_cap", "max_turnover", "mode", "wash_sale",
               "rounding"}


@st.composite
def households(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(2, 6))
    symbols = SYMBOLS[:n]
    prices = {s: draw(st.floats(5, 500)) for s in symbols}
    holdings = {}
    for s in symbols:
        lots = draw(st.lists(st.tuples(st.integers(1, 300), st.floats(0.4, 1.8), st.integers(1, 1500)),
                             max_size=3))
        if lots:
            holdings[s] = [(q, round(prices[s] * b, 2), d) for q, b, d in lots]
    raw = [draw(st.floats(0, 1)) for _ in symbols]
    scale = draw(st.floats(0.8, 0.99)) / max(sum(raw), 1e-9)
    targets = {s: round(w * scale, 4) for s, w in zip(symbols, raw, strict=True) if w * scale > 1e-4}
    cash = draw(st.floats(0, 20_000))
    if not holdings and cash < 100:
        cash = 1_000.0
    value = cash + sum(q * prices[s] for s, lots in holdings.items() for q, _, _ in lots)
    restricted = [s for s in symbols if draw(st.integers(0, 5)) == 0]
    snap = make_snapshot(prices=prices, holdings=holdings, targets=targets, cash=round(cash, 2),
                         reserve=round(draw(st.floats(0, 0.05)) * value, 2), restricted=restricted,
                         account_type=draw(st.sampled_from(["taxable", "taxable", "tax_deferred"])),
                         max_turnover=draw(st.sampled_from([None, 0.5, 2.0])))
    trades = tuple(
        HouseholdTrade(account_id=draw(st.sampled_from(["acct-1", "ira", "spouse"])),
                       symbol=draw(st.sampled_from(symbols)), side=draw(st.sampled_from(["buy", "sell"])),
                       trade_date=AS_OF.date() - timedelta(days=draw(st.integers(0, 45))),
                       realized_loss=draw(st.booleans()))
        for _ in range(draw(st.integers(0, 3))))
    ctx = RebalanceContext(
        securities={s: SecurityInfo(substitute_group=SUBSTITUTE.get(s),
                                    sigma_daily=draw(st.sampled_from([None, 0.02])), adv_usd=5e6)
                    for s in symbols},
        recent_trades=trades,
        tax_budget_usd=draw(st.sampled_from([None, 0.0, 200.0, 2_000.0])),
        gain_cap_usd=draw(st.sampled_from([None, 0.0, 5_000.0])),
        mode=draw(st.sampled_from(["both", "both", "buy_only", "sell_only"])),
        withdrawal_usd=draw(st.sampled_from([0.0, 0.0, round(0.05 * value, 2)])),
        harvest_min_loss_usd=draw(st.sampled_from([0.0, 100.0])),
    )
    return snap, ctx


def _recent(ctx: RebalanceContext, side: str, loss_only: bool) -> set[str]:
    """Wash groups (a security's own symbol: no wash groups in this strategy) hit in 30 days."""
    return {t.symbol for t in ctx.recent_trades
            if t.side == side and (t.realized_loss or not loss_only)
            and (AS_OF.date() - t.trade_date).days <= 30}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(households())
def test_a_proposal_meets_the_mandate_or_names_what_it_cannot(case) -> None:  # type: ignore[no-untyped-def]
    snap, ctx = case
    try:
        p = propose(snap, context=ctx)
    except InfeasibleProblem as e:
        assert e.constraint in CONSTRAINTS
        return
    assert_valid(snap, p)
    orders = list(p.orders)
    need = snap.cash_reserve_usd + Decimal(repr(ctx.withdrawal_usd)).quantize(Decimal("0.01"))
    assert cash_after_orders(snap, orders) >= need - Decimal("0.02")
    lots = {lot.lot_id: lot for pos in snap.positions for lot in pos.lots}
    price = {s.symbol: s.price_usd for s in snap.securities}
    loss_sold = {o.symbol for o in orders if o.side == "sell"
                 for li in o.lots if lots[li.lot_id].cost_basis_usd_per_share > price[o.symbol]}
    bought = {o.symbol for o in orders if o.side == "buy"}
    assert not loss_sold & bought
    assert not bought & _recent(ctx, "sell", loss_only=True)
    recent_buys = _recent(ctx, "buy", loss_only=False)
    assert not loss_sold & recent_buys
    if ctx.mode == "buy_only":
        assert all(o.side == "buy" for o in orders)
    if ctx.mode == "sell_only":
        assert all(o.side == "sell" for o in orders)
    tax = lot_arithmetic_tax(snap, orders)
    assert p.est_tax_usd == tax.quantize(Decimal("0.01"))
    assert p.tax["tax_total_usd"] == p.est_tax_usd
    if ctx.tax_budget_usd is not None:
        assert tax <= Decimal(repr(ctx.tax_budget_usd)) + Decimal("0.01")
    if ctx.gain_cap_usd is not None and snap.account_type == "taxable":
        gain = sum((li.shares * (price[o.symbol] - lots[li.lot_id].cost_basis_usd_per_share)
                    for o in orders if o.side == "sell" for li in o.lots), Decimal(0))
        assert gain <= Decimal(repr(ctx.gain_cap_usd)) + Decimal("0.01")
    assert p.costs["total_usd"] >= p.costs["half_spread_usd"] + p.costs["commission_usd"]
