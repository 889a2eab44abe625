"""The continuous optimum: behaviour per driver, constraints, and an independent formulation."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from trimtab.rebalance import (
    DEFAULT_DRIVER_WEIGHTS,
    DEFAULT_TUNING,
    DRIVERS,
    InfeasibleProblem,
    from_snapshot,
    solve_continuous,
    solve_trades,
)
from trimtab.rebalance.inputs import RebalanceInput
from trimtab.rebalance.objective import lot_tie_break, reg_tau
from trimtab.rebalance.rounding import cash_after_usd

from .conftest import drifted_account, make_snapshot

ALL_ON = dict(DEFAULT_DRIVER_WEIGHTS)


def post_weights(inp: RebalanceInput, trade_shares: np.ndarray) -> np.ndarray:
    return inp.pre_weight + trade_shares * inp.price_usd / inp.value_usd


@pytest.mark.parametrize("n", [4, 8, 20])
def test_a_drifted_account_without_tax_friction_comes_back_near_target(n: int) -> None:
    inp = from_snapshot(drifted_account(n, gains=False, account_type="tax_deferred"))
    assert np.abs(inp.pre_weight - inp.target_weight).max() > 0.02
    trade = solve_trades(inp, ALL_ON)
    dev = post_weights(inp, trade) - inp.target_weight
    assert np.abs(dev).max() < 1e-3


def test_every_driver_off_trades_nothing() -> None:
    inp = from_snapshot(drifted_account(8, reserve=5_000, restricted=["S01"]))
    trade = solve_trades(inp, {d: 0.0 for d in DRIVERS})
    assert (trade == 0.0).all()
    assert solve_trades(inp, {}) == pytest.approx(trade)


def test_no_security_is_bought_and_sold_and_no_loss_is_washed() -> None:
    inp = from_snapshot(drifted_account(20, gains=True))
    sol = solve_continuous(inp, ALL_ON)
    sold = np.bincount(inp.lot_security, weights=sol.sell_shares, minlength=inp.n_securities)
    both = (sold > 1e-4) & (sol.buy_shares > 1e-4)
    assert not both.any(), [inp.symbols[i] for i in np.flatnonzero(both)]
    assert sol.notes  # this account has loss lots in securities it also wants to buy


def test_never_sells_more_than_a_lot_holds() -> None:
    inp = from_snapshot(drifted_account(10, gains=True, cash_weight=0.0))
    for weights in (ALL_ON, {"drift": 1.0, "cash": 1e-3, "restrictions": 1.0}, {"tax": 1.0}):
        sol = solve_continuous(inp, weights)
        assert (sol.sell_shares <= inp.lot_shares + 1e-9).all()
        assert (sol.sell_shares >= 0).all() and (sol.buy_shares >= 0).all()


def test_cash_reserve_is_raised_and_kept() -> None:
    snap = drifted_account(8, gains=False, cash_weight=0.0, reserve=20_000)
    inp = from_snapshot(snap)
    assert inp.cash_usd < inp.cash_reserve_usd
    sol = solve_continuous(inp, ALL_ON)
    assert cash_after_usd(inp, sol.sell_shares, sol.buy_shares) >= inp.cash_reserve_usd - 1e-3


def test_restricted_securities_are_untouched_and_bind() -> None:
    snap = make_snapshot(prices={"A": 100, "B": 50, "C": 20},
                         holdings={"A": 600, "B": 100, "C": 100},
                         targets={"A": 0.3, "B": 0.4, "C": 0.3}, restricted=["A", "B"], cash=1000)
    inp = from_snapshot(snap)
    sol = solve_continuous(inp, ALL_ON)
    assert abs(sol.trade_shares[0]) < 1e-6 and abs(sol.trade_shares[1]) < 1e-6
    relaxed = solve_trades(inp, {**ALL_ON, "restrictions": 0.0})
    assert relaxed[0] < -100 and relaxed[1] > 50


@pytest.mark.parametrize("acquired_days, expected_a", [
    # Long-term (tax 0.6 * 0.20 = 12 % of proceeds): selling A by d also lets B be bought by d,
    # so the sale stops where 2 a_A + 2 |a_B| = 0.12, i.e. 3 points over target.
    (900, 0.53),
    # Short-term (0.6 * 0.37 = 22 %): that balance lies beyond the 5-point band, whose penalty
    # outweighs any tax rate, so the sale stops exactly at the band edge.
    (200, 0.55),
])
def test_gains_hold_a_sale_back_within_the_band_but_not_beyond(acquired_days: int, expected_a: float) -> None:
    snap = make_snapshot(prices={"A": 100, "B": 100},
                         holdings={"A": [(590, 40, acquired_days)], "B": 410},
                         targets={"A": 0.5, "B": 0.5}, cash=0, band=0.05, half_spread_bps=0)
    inp = from_snapshot(snap)
    aware = post_weights(inp, solve_trades(inp, ALL_ON))
    blind = post_weights(inp, solve_trades(inp, {**ALL_ON, "tax": 0.0}))
    assert aware[0] == pytest.approx(expected_a, abs=1e-3)
    assert blind[0] == pytest.approx(0.5, abs=1e-3)


def test_reserve_that_cannot_be_raised_is_a_typed_error() -> None:
    snap = make_snapshot(prices={"A": 100}, holdings={"A": 10}, targets={"A": 1.0},
                         cash=0, reserve=5_000)
    with pytest.raises(InfeasibleProblem) as err:
        solve_continuous(from_snapshot(snap), ALL_ON)
    assert err.value.constraint == "cash_reserve"
    restricted = make_snapshot(prices={"A": 100}, holdings={"A": 100}, targets={"A": 1.0},
                               cash=0, reserve=500, restricted=["A"])
    with pytest.raises(InfeasibleProblem):
        solve_continuous(from_snapshot(restricted), ALL_ON)


def test_max_turnover_bounds_the_trade_and_names_itself_when_infeasible() -> None:
    snap = drifted_account(6, gains=False, max_turnover=0.05)
    inp = from_snapshot(snap)
    trade = solve_trades(inp, ALL_ON)
    assert np.abs(trade * inp.price_usd).sum() / inp.value_usd <= 0.05 + 1e-6
    short = make_snapshot(prices={"A": 100, "B": 100}, holdings={"A": 500, "B": 500},
                          targets={"A": 0.5, "B": 0.5}, cash=0, reserve=30_000, max_turnover=0.1)
    with pytest.raises(InfeasibleProblem) as err:
        solve_continuous(from_snapshot(short), ALL_ON)
    assert err.value.constraint == "max_turnover"


def test_numpy_objective_equals_the_solvers() -> None:
    from trimtab.rebalance.drivers import validate_weights
    from trimtab.rebalance.objective import evaluate
    from trimtab.rebalance.problem import compiled
    from trimtab.rebalance.solve import _to_shares, assemble, shape_of

    inp = from_snapshot(drifted_account(12, gains=True, reserve=3000))
    weights = validate_weights(ALL_ON)
    shape = shape_of(inp)
    bans = solve_continuous(inp, ALL_ON).bans
    raw = compiled(shape)._solve_cvxpy(assemble(inp, weights, DEFAULT_TUNING, shape, bans))
    sell, buy = _to_shares(inp, shape, raw)
    # The problem expands drift g d (dev + t)^2 plus the regularizer r t^2 into a diagonal and a
    # linear term; the constant it drops is sum g d dev^2 (d = 1 without a risk model).
    dev = inp.pre_weight - inp.target_weight
    constant = float((weights["drift"] * inp.specific * dev**2).sum())
    assert evaluate(inp, weights, sell, buy, DEFAULT_TUNING)["total"] == pytest.approx(
        raw.objective + constant, rel=1e-7, abs=1e-10)


def plain_model(inp: RebalanceInput, w: dict[str, float]) -> np.ndarray:
    """The same problem written plainly: shares as variables, no Parameters, no padding."""
    tun = DEFAULT_TUNING
    V0, p, n, m = inp.value_usd, inp.price_usd, inp.n_securities, inp.n_lots
    member = np.zeros((n, m))
    member[inp.lot_security, np.arange(m)] = 1.0
    s = cp.Variable(m, nonneg=True)
    u = cp.Variable(n, nonneg=True)
    t = cp.multiply(u - member @ s, p) / V0
    a = inp.pre_weight + t - inp.target_weight
    buy_usd = cp.multiply(u, p)
    sell_usd = cp.multiply(s, inp.lot_price_usd)
    cost = (inp.cost_rate @ buy_usd + inp.cost_rate[inp.lot_security] @ sell_usd) / V0
    tax = (inp.lot_gain_usd_per_share * inp.lot_tax_rate) @ s / V0
    post_cash = inp.cash_weight - cp.sum(t) - cost
    objective = (
        w["drift"] * (cp.sum_squares(a) + tun.band_penalty * cp.sum(cp.pos(cp.abs(a) - inp.band_abs)))
        + w["cost"] * cost + w["tax"] * tax
        + w["cash"] * cp.pos(inp.cash_weight - cp.sum(t) - inp.cash_target_weight)
        + tun.regularization * cp.sum(cp.multiply(cp.square(t), 1 / reg_tau(inp, tun)))
        + lot_tie_break(inp, tun) @ sell_usd / V0 + tun.tie_break * cp.sum(buy_usd) / V0
    )
    allowed = ~inp.restricted
    constraints = [
        s <= inp.lot_shares * allowed[inp.lot_security],
        u <= allowed * V0 / p,
        post_cash >= inp.reserve_weight,
    ]
    cp.Problem(cp.Minimize(1e4 * objective), constraints).solve(solver="CLARABEL")
    return u.value - member @ s.value


@pytest.mark.parametrize("weights", [
    ALL_ON,
    {**ALL_ON, "tax": 0.0},
    {**ALL_ON, "drift": 3.0, "cost": 5.0},
    {"drift": 1.0, "cash": 1.0, "restrictions": 1.0},
])
def test_matches_an_independent_plain_formulation(weights: dict[str, float]) -> None:
    # Gains only (no loss lots), so the wash-sale step has nothing to do and both models are
    # the same convex problem.
    snap = make_snapshot(
        prices={"A": 120.0, "B": 45.5, "C": 230.0, "D": 18.25},
        holdings={"A": [(300, 80.0, 900), (100, 110.0, 200)], "B": [(500, 30.0, 60)],
                  "C": [(20, 100.0, 1200)], "D": [(400, 18.0, 700)]},
        targets={"A": 0.25, "B": 0.3, "C": 0.2, "D": 0.2},
        cash=4_000, reserve=1_500, restricted=["D"], half_spread_bps={"A": 2, "B": 8, "C": 3, "D": 5},
        commission=0.005,
    )
    inp = from_snapshot(snap)
    assert (inp.lot_gain_usd_per_share >= 0).all()
    ours = solve_trades(inp, weights)
    plain = plain_model(inp, {d: weights.get(d, 0.0) for d in DRIVERS})
    # Dollars, to the solver's accuracy in weight (trades under 1e-6 of V0 are snapped to zero).
    np.testing.assert_allclose(ours * inp.price_usd, plain * inp.price_usd, atol=2e-6 * inp.value_usd)


def test_typed_errors_survive_pickling() -> None:
    import pickle

    from trimtab.rebalance import ExplanationFailed, InvalidSnapshot, SolverFailed

    errors = [
        InfeasibleProblem("cash_reserve", "cannot raise", account_id="a1"),
        SolverFailed("no solver", solver="SCS", status_text="infeasible_inaccurate"),
        InvalidSnapshot("no price", symbols=["X"]),
        ExplanationFailed("efficiency", proposal_id="p"),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert back.detail == err.detail and back.extra == err.extra
    assert pickle.loads(pickle.dumps(errors[0])).constraint == "cash_reserve"
