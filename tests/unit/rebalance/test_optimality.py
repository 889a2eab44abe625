"""Optimality with the full mandate: the compiled problem against a plainly written model.

The plain model is written from the formulation in docs/optimizer.md, in shares, with a dense
covariance F F^T + diag(d) (fine at five securities, never done in the library), cvxportfolio's
`power(abs(t), 3/2)` impact, and the tax budget, gain cap, withdrawal and turnover as written
constraints. Gains only (no loss lots), so the wash-sale step has nothing to decide and both are
the same convex problem.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from trimtab.rebalance import (
    DEFAULT_DRIVER_WEIGHTS,
    DEFAULT_TUNING,
    ContinuousSolution,
    FactorModel,
    RebalanceContext,
    SecurityInfo,
    from_snapshot,
    solve_continuous,
)
from trimtab.rebalance.inputs import RebalanceInput
from trimtab.rebalance.objective import evaluate, lot_tie_break, reg_tau

from .conftest import make_snapshot

ALL_ON = dict(DEFAULT_DRIVER_WEIGHTS)
SYMBOLS = ("A", "B", "C", "D", "E")


def snapshot():  # type: ignore[no-untyped-def]
    return make_snapshot(
        prices={"A": 120.0, "B": 45.5, "C": 230.0, "D": 18.25, "E": 75.0},
        holdings={"A": [(300, 80.0, 900), (100, 110.0, 200)], "B": [(500, 30.0, 60)],
                  "C": [(20, 100.0, 1200)], "D": [(400, 18.0, 700)], "E": [(150, 60.0, 500)]},
        targets={"A": 0.2, "B": 0.3, "C": 0.2, "D": 0.1, "E": 0.15},
        cash=4_000, reserve=1_500, restricted=["D"], half_spread_bps={"A": 2, "B": 8, "C": 3, "D": 5, "E": 4},
        commission=0.005, max_turnover=0.8, band=0.03,
    )


def factor_model() -> FactorModel:
    rng = np.random.default_rng(3)
    return FactorModel(symbols=SYMBOLS, loadings=rng.normal(0, 0.15, (5, 3)),
                       specific_var=rng.uniform(0.01, 0.05, 5))


def assert_matches_plain_model(inp: RebalanceInput, ctx: RebalanceContext,
                               weights: dict[str, float]) -> ContinuousSolution:
    """Solve; the trade must be the plain model's to 2e-5 of the account in dollars, and the
    reported objective the numpy evaluation of the solution (the same function)."""
    sol = solve_continuous(inp, weights)
    plain = plain_model(inp, ctx, weights)
    np.testing.assert_allclose(sol.trade_shares * inp.price_usd, plain * inp.price_usd,
                               atol=2e-5 * inp.value_usd)
    assert sol.terms["total"] == pytest.approx(
        evaluate(inp, weights, sol.sell_shares, sol.buy_shares, DEFAULT_TUNING)["total"])
    return sol


def plain_model(inp: RebalanceInput, snap_ctx: RebalanceContext, w: dict[str, float]) -> np.ndarray:
    tun = DEFAULT_TUNING
    V0, p, n, m = inp.value_usd, inp.price_usd, inp.n_securities, inp.n_lots
    member = np.zeros((n, m))
    member[inp.lot_security, np.arange(m)] = 1.0
    # Risk: dense covariance of the model, scaled so the average security's variance is 1; its
    # systematic part (L L^T) is the risk driver's, the specific part (diag d) drift's.
    fm = snap_ctx.factor_model
    if fm is None:
        specific, systematic = np.eye(n), np.zeros((n, n))
    else:
        order = [fm.symbols.index(s) for s in inp.symbols]
        L, d = fm.loadings[order], fm.specific_var[order]
        scale = np.mean(np.diag(L @ L.T + np.diag(d)))
        specific, systematic = np.diag(d) / scale, L @ L.T / scale
    impact_coef = np.array([snap_ctx.impact_b * i.sigma_daily * np.sqrt(V0 / i.adv_usd)
                            if (i := snap_ctx.info(s)).sigma_daily else 0.0 for s in inp.symbols])
    s = cp.Variable(m, nonneg=True)
    u = cp.Variable(n, nonneg=True)
    t = cp.multiply(u - member @ s, p) / V0
    a = inp.pre_weight + t - inp.target_weight
    buy_usd, sell_usd = cp.multiply(u, p), cp.multiply(s, inp.lot_price_usd)
    lin_cost = (inp.cost_rate @ buy_usd + inp.cost_rate[inp.lot_security] @ sell_usd) / V0
    impact = impact_coef @ cp.power(cp.abs(t), 1.5)
    gain_usd = inp.lot_gain_usd_per_share @ s
    tax_usd = (inp.lot_gain_usd_per_share * inp.lot_tax_rate) @ s
    post_cash = inp.cash_weight - cp.sum(t) - lin_cost
    objective = (
        w["drift"] * (cp.quad_form(a, specific) + tun.band_penalty * cp.sum(cp.pos(cp.abs(a) - inp.band)))
        + w["risk"] * cp.quad_form(a, cp.psd_wrap(systematic))
        + w["cost"] * (lin_cost + impact) + w["tax"] * tax_usd / V0
        + w["cash"] * cp.pos(inp.cash_weight - cp.sum(t) - inp.cash_target_weight)
        + tun.regularization * cp.sum(cp.multiply(cp.square(t), 1 / reg_tau(inp, tun)))
        + lot_tie_break(inp, tun) @ sell_usd / V0 + tun.tie_break * cp.sum(buy_usd) / V0
    )
    allowed = ~inp.restricted
    constraints = [
        s <= inp.lot_shares * allowed[inp.lot_security], u <= allowed * V0 / p,
        post_cash >= (snap_ctx.withdrawal_usd + inp.cash_reserve_usd) / V0,
        cp.sum(cp.abs(t)) <= inp.max_turnover,
    ]
    if snap_ctx.tax_budget_usd is not None:
        constraints.append(tax_usd <= snap_ctx.tax_budget_usd)
    if snap_ctx.gain_cap_usd is not None:
        constraints.append(gain_usd <= snap_ctx.gain_cap_usd)
    cp.Problem(cp.Minimize(1e4 * objective), constraints).solve(solver="CLARABEL")
    return u.value - member @ s.value


IMPACT = {s: SecurityInfo(sigma_daily=0.015 + 0.002 * k, adv_usd=2e5 * (k + 1)) for k, s in enumerate(SYMBOLS)}


@pytest.mark.parametrize("ctx", [
    RebalanceContext(factor_model=factor_model()),
    RebalanceContext(securities=IMPACT),
    RebalanceContext(factor_model=factor_model(), securities=IMPACT, withdrawal_usd=6_000.0),
    RebalanceContext(tax_budget_usd=400.0, withdrawal_usd=3_000.0),
    RebalanceContext(gain_cap_usd=1_500.0, factor_model=factor_model()),
], ids=["factor", "impact", "factor-impact-withdrawal", "tax-budget", "gain-cap"])
@pytest.mark.parametrize("risk", [1.0, 4.0, 0.0], ids=["risk-1", "risk-4", "risk-off"])
def test_matches_an_independent_plain_formulation(ctx: RebalanceContext, risk: float) -> None:
    snap = snapshot()
    inp = from_snapshot(snap, ctx)
    assert (inp.lot_gain_usd_per_share >= 0).all()
    weights = {**ALL_ON, "risk": risk}
    sol = assert_matches_plain_model(inp, ctx, weights)
    if ctx.factor_model is not None and ctx.gain_cap_usd is None and risk != 1.0:
        # The risk weight acts on the factor model's term (a different weight, a different trade;
        # with the gain cap binding, the cap decides).
        other = solve_continuous(inp, ALL_ON).trade_shares
        assert np.abs((sol.trade_shares - other) * inp.price_usd).max() > 1e-3 * inp.value_usd


def test_binding_budgets_bind_in_both_models() -> None:
    ctx = RebalanceContext(tax_budget_usd=400.0, withdrawal_usd=3_000.0)
    inp = from_snapshot(snapshot(), ctx)
    sol = solve_continuous(inp, ALL_ON)
    tax = float((inp.lot_gain_usd_per_share * inp.lot_tax_rate) @ sol.sell_shares)
    assert tax == pytest.approx(400.0, abs=0.05)
    free = solve_continuous(from_snapshot(snapshot(), RebalanceContext(withdrawal_usd=3_000.0)), ALL_ON)
    assert float((inp.lot_gain_usd_per_share * inp.lot_tax_rate) @ free.sell_shares) > 450.0
