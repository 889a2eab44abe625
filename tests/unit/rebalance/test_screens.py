"""Screens (never buy, the ESG screen) and the factor-risk driver: constraints, contract and
their attributions."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from trimtab.rebalance import RebalanceContext, explain, from_snapshot, propose
from trimtab.rebalance.context import FactorModel
from trimtab.rebalance.drivers import DEFAULT_DRIVER_WEIGHTS, recorded_weights
from trimtab.rebalance.errors import InvalidSnapshot
from trimtab.rebalance.explain import EXPLAIN_DRIVERS, shapley_values, structurally_null
from trimtab.rebalance.rounding import check
from trimtab.rebalance.solve import Bans
from trimtab.shared.canonical import canonical_json

from .conftest import make_snapshot


def screened(**extra):  # type: ignore[no-untyped-def]
    """100 000 USD held exactly at the model's targets (A 40 %, B 40 %, X 20 %, no cash); the ESG
    screen excludes X, so the targets are A 50 %, B 50 %. Bases equal prices: no tax."""
    snap = make_snapshot(prices={"A": 100, "B": 100, "X": 100},
                         holdings={"A": 400, "B": 400, "X": 200},
                         targets={"A": 0.5, "B": 0.5}, band=0.05)
    return snap.model_copy(update={"esg_excluded": ["X"],
                                   "targets_before_esg": {"A": Decimal("0.4"), "B": Decimal("0.4"),
                                                          "X": Decimal("0.2")}, **extra})


def test_a_snapshot_without_screens_serializes_as_before() -> None:
    plain = make_snapshot(prices={"A": 100}, holdings={"A": 10}, targets={"A": 1.0})
    body = canonical_json(plain)
    for key in (b"never_buy", b"esg_excluded", b"targets_before_esg"):
        assert key not in body
    assert b'"esg_excluded":["X"]' in canonical_json(screened())


def test_the_screen_sells_the_excluded_holding_and_never_buys_it() -> None:
    p = propose(screened())
    orders = {o.symbol: o for o in p.orders}
    # The whole holding: the continuous optimum keeps ~0.1 share (cost against a tiny drift),
    # and a target-0 remainder under the minimum trade is sold with the rest, not left as dust.
    assert orders["X"].side == "sell" and orders["X"].shares == 200
    assert all(o.side == "sell" for o in p.orders if o.symbol == "X")
    # Cash to invest and X the cheapest way to hold exposure: still never bought.
    rich = screened(cash_usd=Decimal("50000"))
    assert all(o.symbol != "X" or o.side == "sell" for o in propose(rich).orders)


def test_the_esg_screen_and_drift_share_the_excluded_sale_by_hand() -> None:
    # Two players: with the screen lifted the account sits on its targets (drift alone trades
    # nothing); without drift nothing moves the account (the screen alone trades nothing);
    # both together make the trade. v(S) = 0 for |S| < 2: each gets half of every trade.
    snap = screened()
    inp = from_snapshot(snap)
    r = shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=("drift", "esg"))
    x = inp.symbols.index("X")
    assert r.full[x] < -50  # a real sale
    np.testing.assert_allclose(r.values[0], r.full / 2, atol=1e-6)
    np.testing.assert_allclose(r.values[1], r.full / 2, atol=1e-6)


def test_the_explanation_names_the_screen() -> None:
    p = propose(screened())
    e = explain(p, drivers=EXPLAIN_DRIVERS, prune=True)
    by = {t.symbol: t for t in e.trades}
    assert by["X"].contributions_shares["esg"] < -10
    assert "ESG screen" in e.narrative_advisor and "values screen" in e.narrative_client
    for t in e.trades:
        assert t.base_shares + sum(t.contributions_shares.values()) == pytest.approx(t.trade_shares, abs=1e-6)


def test_never_buy_is_a_restriction_on_buying_only() -> None:
    snap = make_snapshot(prices={"A": 100, "B": 100, "N": 100},
                         holdings={"A": 300, "B": 300, "N": 100}, cash=30_000,
                         targets={"A": 0.5, "B": 0.5}).model_copy(update={"never_buy": ["N"]})
    inp = from_snapshot(snap)
    assert "restrictions" not in structurally_null(inp, EXPLAIN_DRIVERS)
    p = propose(snap)
    assert not any(o.symbol == "N" and o.side == "buy" for o in p.orders)
    n = inp.symbols.index("N")
    buy = np.zeros(inp.n_securities)
    buy[n] = 1.0
    assert "never-buy security bought" in check(inp, np.zeros(inp.n_lots), buy, Bans())


def test_a_restricted_and_screened_holding_is_neither_bought_nor_sold() -> None:
    p = propose(screened(restricted=["X"]))
    assert not any(o.symbol == "X" for o in p.orders)


def test_an_esg_buy_fails_the_re_check() -> None:
    inp = from_snapshot(screened())
    buy = np.zeros(inp.n_securities)
    buy[inp.symbols.index("X")] = 1.0
    assert "ESG-excluded security bought" in check(inp, np.zeros(inp.n_lots), buy, Bans())


@pytest.mark.parametrize("update, message", [
    ({"esg_excluded": ["A"], "targets_before_esg": None}, "has a target"),
    ({"esg_excluded": [], "targets_before_esg": {"A": Decimal("0.5")}}, "without esg_excluded"),
    ({"targets_before_esg": {"A": Decimal("0.7"), "X": Decimal("0.7")}}, "sum to more than 1"),
])
def test_inconsistent_screens_are_refused(update: dict, message: str) -> None:
    with pytest.raises(InvalidSnapshot, match=message):
        from_snapshot(screened(**update))


def test_risk_is_null_without_a_factor_model_and_acts_with_one() -> None:
    snap = make_snapshot(prices={"A": 100, "B": 50, "C": 20},
                         holdings={"A": 300, "B": 300, "C": 1000}, targets={"A": 0.4, "B": 0.3, "C": 0.3},
                         cash=2_000, band=0.02)
    assert "risk" in structurally_null(from_snapshot(snap), EXPLAIN_DRIVERS)
    fm = FactorModel(symbols=("A", "B", "C"), loadings=np.array([[0.2, 0.0], [0.18, 0.1], [0.05, -0.1]]),
                     specific_var=np.array([0.01, 0.02, 0.03]))
    ctx = RebalanceContext(factor_model=fm)
    inp = from_snapshot(snap, ctx)
    assert "risk" not in structurally_null(inp, EXPLAIN_DRIVERS)
    r = shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=EXPLAIN_DRIVERS, prune=True)
    risk = r.values[EXPLAIN_DRIVERS.index("risk")]
    assert np.abs(risk * inp.price_usd).max() > 10.0  # dollars of trade the factor term moves
    np.testing.assert_allclose(r.values.sum(axis=0) + r.base, r.full, atol=1e-6)


def test_recorded_weights_of_an_older_formulation_keep_their_behaviour() -> None:
    old = {"drift": 2.0, "cost": 1.0, "tax": 1.0, "cash": 0.001, "restrictions": 1.0}
    w = recorded_weights(old)
    assert w["risk"] == 2.0 and w["esg"] == 1.0
    assert recorded_weights(None) == dict(DEFAULT_DRIVER_WEIGHTS)


@pytest.mark.parametrize("max_turnover", [0.996, 0.998])
def test_an_exit_sold_whole_never_breaks_the_turnover_limit(max_turnover: float) -> None:
    # The optimum uses the turnover limit to the full: selling the rest of X would break it, so
    # the remainder stays (before the check, such proposals failed their re-check).
    snap = make_snapshot(prices={"A": 1.0, "X": 10.0}, holdings={"A": 10_000, "X": 1_000},
                         targets={"A": 1.0}, band=0.02, max_turnover=max_turnover)
    orders = {o.symbol: o for o in propose(snap).orders}
    assert orders["X"].shares < 1_000


def test_an_exit_sold_whole_never_tightens_the_tax_budget() -> None:
    # 1,000 X at a gain of $9 a share, long term (20 %): all of it would owe $1,800 of tax.
    snap = make_snapshot(prices={"A": 1, "X": 10}, holdings={"A": 10_000, "X": [(1_000, 1.0, 800)]},
                         targets={"A": 1.0}, band=0.001)
    p = propose(snap, context=RebalanceContext(tax_budget_usd=1797.5))
    orders = {o.symbol: o for o in p.orders}
    assert orders["X"].shares == 998 and p.est_tax_usd <= Decimal("1797.50")
    assert not any("tightened" in n for n in p.notes)
    # Without a budget the exit is whole.
    assert {o.symbol: o for o in propose(snap).orders}["X"].shares == 1_000


def test_targets_before_the_screen_do_not_change_the_proposal() -> None:
    # X (screened out, not held, not targeted) only joins the problem for the explainer's
    # coalitions without the screen: the risk model's scale and the orders stay the same.
    fm = FactorModel(symbols=("A", "B", "X"), loadings=np.array([[0.1, 0.0], [0.12, 0.05], [0.9, 0.6]]),
                     specific_var=np.array([0.01, 0.02, 0.5]))
    base = make_snapshot(prices={"A": 100, "B": 50, "X": 10},
                         holdings={"A": [(600, 60.0, 800)], "B": 400}, targets={"A": 0.5, "B": 0.5},
                         band=0.02).model_copy(update={"esg_excluded": ["X"]})
    with_before = base.model_copy(update={"targets_before_esg": {"A": Decimal("0.4"), "B": Decimal("0.4"),
                                                                  "X": Decimal("0.2")}})
    ctx = RebalanceContext(factor_model=fm)
    plain, lifted = propose(base, context=ctx), propose(with_before, context=ctx)
    assert [(o.symbol, o.side, o.shares) for o in plain.orders] == \
        [(o.symbol, o.side, o.shares) for o in lifted.orders]
    assert "X" in from_snapshot(with_before, ctx).symbols


def test_lifting_a_screen_on_nothing_held_is_not_null_when_it_moves_the_targets() -> None:
    # Z is screened but in no problem; the targets before the screen still differ: the esg
    # driver is a real player, and pruning must agree with the unpruned game.
    snap = make_snapshot(prices={"A": 100, "B": 100, "Z": 100}, holdings={"A": 500, "B": 500},
                         targets={"A": 0.5, "B": 0.5}, band=0.05).model_copy(update={
                             "esg_excluded": ["Z"], "targets_before_esg": {"A": Decimal("0.6"),
                                                                           "B": Decimal("0.4")}})
    inp = from_snapshot(snap)
    assert "esg" not in structurally_null(inp, EXPLAIN_DRIVERS)
    pruned = shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=EXPLAIN_DRIVERS, prune=True)
    full = shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=EXPLAIN_DRIVERS)
    np.testing.assert_allclose(pruned.values, full.values, atol=1e-9)
    np.testing.assert_allclose(pruned.full, full.full, atol=1e-9)
