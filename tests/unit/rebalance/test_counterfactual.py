"""Counterfactuals: found by re-solving, checked against a case solved by hand and against the
optimizer on both sides of every threshold."""

# ruff: noqa: B023 - `changed` is called at once, inside the loop iteration that defines it
from __future__ import annotations

from decimal import Decimal

import pytest
from scipy.optimize import brentq

from trimtab.rebalance import explain, from_snapshot, propose
from trimtab.rebalance.counterfactual import TOL
from trimtab.rebalance.explain import EXPLAIN_DRIVERS
from trimtab.rebalance.solve import solve_continuous

from .conftest import drifted_account
from .test_explain_properties import hand_account


def _trade_usd(snap, symbol: str) -> float:  # type: ignore[no-untyped-def]
    inp = from_snapshot(snap)
    i = inp.symbols.index(symbol)
    return float(solve_continuous(inp, propose(snap).driver_weights).trade_shares[i] * inp.price_usd[i])


def test_hand_case_price_threshold_and_what_cannot_stop_the_sale() -> None:
    # A at price 100 m: weight 0.6m / (0.6m + 0.4), excess a0 = that - 0.5; tax per weight sold
    # c = (1 - 0.5/m) 0.2. The sale leaves min(c/4, band) of excess (see the properties test), so
    # it stops when (a0 - min(c/4, 0.05)) * V(m) falls to the $50 minimum order, V = 60,000m + 40,000.
    # Neither a wider band (the squared drift still pulls) nor any tax rate up to 100 % (c <= 0.5:
    # the band caps what tax can hold back) stops it.
    p = propose(hand_account())
    e = explain(p, drivers=EXPLAIN_DRIVERS, counterfactuals=True)
    cfs = {c.parameter: c for c in e.counterfactuals["A"]}

    def left(m: float) -> float:
        a0 = 0.6 * m / (0.6 * m + 0.4) - 0.5
        c = (1 - 0.5 / m) * 0.2
        return (a0 - min(c / 4, 0.05)) * (60_000 * m + 40_000) - 50.0

    m_star = brentq(left, 0.55, 1.0)
    price = cfs["price"]
    assert price.direction == "below" and price.current == 100.0
    assert price.precision <= 100 * TOL["price"]
    assert price.threshold == pytest.approx(100 * m_star, abs=price.precision + 0.05)
    assert cfs["band"].threshold is None and cfs["band"].searched_to > 0.1
    # The rates scale together until the higher (short-term 37 %) reaches 100 %.
    assert cfs["tax_rate"].threshold is None and cfs["tax_rate"].searched_to == pytest.approx(0.2 / 0.37)
    assert e.counterfactual_resolves == sum(c.resolves for cs in e.counterfactuals.values() for c in cs)
    assert "price <= $" in e.narrative_advisor and "no band up to" in e.narrative_advisor
    assert f"Had the price of A been about {abs(price.change_pct):.1f}% lower" in e.narrative_client


def test_every_threshold_is_where_the_optimizer_stops_trading() -> None:
    snap = drifted_account(8, gains=True, reserve=2_000, seed=9)
    p = propose(snap)
    e = explain(p, drivers=EXPLAIN_DRIVERS, counterfactuals=True, max_counterfactual_orders=3)
    assert len(e.counterfactuals) == 3
    orders = {o.symbol: o for o in p.orders}
    found = 0
    for sym, cfs in e.counterfactuals.items():
        side = orders[sym].side
        for c in cfs:
            if c.threshold is None:
                continue
            found += 1
            step = c.precision
            assert 0 < step <= {"band": TOL["band"], "price": TOL["price"] * c.current,
                                "tax_rate": TOL["tax_rate"]}[c.parameter] * 8
            inside = c.threshold - step if c.direction == "above" else c.threshold + step

            def changed(x: float):  # type: ignore[no-untyped-def]
                if c.parameter == "band":
                    return snap.model_copy(update={"policy": snap.policy.model_copy(update={"band_abs": Decimal(repr(x))})})
                if c.parameter == "price":
                    secs = [s.model_copy(update={"price_usd": Decimal(f"{x:.4f}")}) if s.symbol == sym else s
                            for s in snap.securities]
                    return snap.model_copy(update={"securities": secs})
                k = x / float(snap.tax_rates.long_term)
                return snap.model_copy(update={"tax_rates": snap.tax_rates.model_copy(update={
                    "long_term": Decimal(f"{x:.6f}"),
                    "short_term": Decimal(f"{float(snap.tax_rates.short_term) * k:.6f}")})})

            sign = -1 if side == "sell" else 1
            assert sign * _trade_usd(changed(c.threshold), sym) < 50.0, (sym, c)  # stopped
            assert sign * _trade_usd(changed(inside), sym) >= 50.0 - 1e-6, (sym, c)  # still trades
    assert found >= 1
