"""Why each household trade: exact Shapley values over the drivers, location included
(`household_explain.py`), on the hand-computed asset-location scenarios of test_household.py."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from trimtab.rebalance import FactorModel, RebalanceContext, SecurityInfo, propose_household
from trimtab.rebalance.explain import exact_shapley
from trimtab.rebalance.household import (
    household_input,
    household_weights,
    solve_household_continuous,
)
from trimtab.rebalance.household_explain import explain_household, shapley_from_coalitions

from .test_household import SIXTY_FORTY, TWO, snap


def _bond_in_taxable():  # type: ignore[no-untyped-def]
    taxable = snap("taxable", "taxable", {"BND": [(400, 100.0, 800)]}, symbols=TWO)
    ira = snap("ira", "tax_deferred", {"VTI": [(240, 250.0, 800)]}, symbols=TWO)
    return taxable, ira


def _why(p, account: str, symbol: str):  # type: ignore[no-untyped-def]
    [t] = [t for t in p.explanation.trades if t.account_id == account and t.symbol == symbol]
    return t


def test_the_bond_funds_move_is_explained_by_location() -> None:
    """On target already, so only location moves anything (test_household: location off,
    nothing trades): every coalition without location trades nothing. The taxable account's
    bond sale needs location alone (with it on, the bond leaves taxable whatever else is on): all
    400 shares are location's. The other three legs (taxable buys VTI, the IRA sells VTI and buys
    BND) need drift too: without it the proceeds would sit in cash, so with location L and drift
    D, v({L}) = v({D}) = 0 and v({L, D}) = the trade: half each (cost and cash move cents)."""
    taxable, ira = _bond_in_taxable()
    p = propose_household([taxable, ira], SIXTY_FORTY, explain=True)
    e = p.explanation
    assert e is not None
    assert e.drivers == ("drift", "cost", "cash", "location")
    assert set(e.null_drivers) == {"risk", "tax", "restrictions"}  # no factor model, no gains, nothing restricted
    sell = _why(p, "taxable", "BND")
    assert sell.trade_shares == pytest.approx(-400.0, abs=1e-6)
    assert sell.contributions_shares["location"] == pytest.approx(-400.0, abs=1e-6)
    assert all(abs(v) < 1e-6 for d, v in sell.contributions_shares.items() if d != "location")
    for account, symbol in (("taxable", "VTI"), ("ira", "VTI"), ("ira", "BND")):
        t = _why(p, account, symbol)
        c = t.contributions_shares
        assert c["drift"] == pytest.approx(c["location"], rel=1e-9)
        assert c["drift"] == pytest.approx(t.trade_shares / 2, rel=0.01)
        assert "asset location" in t.reason and "toward it" in t.reason
    for t in e.trades:  # efficiency: the base is no trade
        assert t.base_shares == 0.0
        assert sum(t.contributions_shares.values()) == pytest.approx(t.trade_shares, abs=1e-6)
    assert sell.reason == ("Sell 400.00 shares of BND ($40,000.00) in taxable (taxable): holds the security "
                           "where its yearly tax drag is lowest (asset location): $40,000.00 toward it.")
    # 16 coalitions: the full one is the proposal's own solve; of the two without drift, cash
    # and location ({} and {cost}: no motive to trade) only {cost} is valued unsolved (the
    # empty one is always solved, as the base and the check of that premise): 14 solves
    assert (e.coalitions, e.skipped_coalitions, e.resolves) == (16, 1, 14)
    # the explanation does not change the proposal
    plain = propose_household([taxable, ira], SIXTY_FORTY)
    assert plain.explanation is None
    assert [a.orders for a in plain.accounts] == [a.orders for a in p.accounts]


def test_drivers_against_a_trade_are_named_with_their_dollars() -> None:
    """Taxable holds BND and VNQ (a REIT), the IRA VTI; targets 1/3 each (test_household's
    "least tax-efficient first"). About $1,100 of VNQ leaves taxable: location pushes it out
    (its drag), drift holds it back (the household would go under target), and the sale is what
    is left of the two: the reason names both, in dollars."""
    syms = ["BND", "VNQ", "VTI"]
    taxable = snap("taxable", "taxable", {"BND": [(300, 100.0, 800)], "VNQ": [(375, 80.0, 800)]}, symbols=syms)
    ira = snap("ira", "tax_exempt", {"VTI": [(120, 250.0, 800)]}, symbols=syms)
    third = Decimal(1) / 3
    p = propose_household([taxable, ira], {"BND": third, "VNQ": third, "VTI": third}, explain=True)
    t = _why(p, "taxable", "VNQ")
    assert t.trade_shares < 0
    toward, against = dict(t.drivers_toward()), dict(t.drivers_against())
    assert set(toward) == {"location"} and set(against) == {"drift"}
    assert toward["location"] < 0 < against["drift"]
    assert abs(toward["location"]) > 10 * abs(t.trade_usd)  # two large, opposite pushes
    assert f"${abs(against['drift']):,.2f} against it" in t.reason
    assert sum(t.contributions_usd.values()) == pytest.approx(t.trade_usd, abs=1e-3)


def test_every_driver_that_can_act_is_a_player_and_the_values_add_up() -> None:
    """A factor model, market impact, a restricted security and gains: risk, restrictions and tax
    become players (7, 128 coalitions); the contributions still add up to every trade."""
    fm = FactorModel(symbols=("BND", "VTI"), loadings=np.array([[0.002, 0.004], [0.012, 0.0]]),
                     specific_var=np.array([1e-5, 2e-5]))
    secs = {s: SecurityInfo(sigma_daily=0.01, adv_usd=1e9) for s in TWO}
    ctx = RebalanceContext(securities=secs, factor_model=fm)
    taxable = snap("taxable", "taxable", {"BND": [(400, 90.0, 800)], "VTI": [(20, 200.0, 800)]},
                   symbols=TWO, restricted=["VTI"])
    ira = snap("ira", "tax_deferred", {"VTI": [(240, 250.0, 800)]}, symbols=TWO)
    hh = household_input([taxable, ira], SIXTY_FORTY, ctx)
    weights = household_weights({"location": 3.0})
    e = explain_household(hh, weights)
    assert e.drivers == ("drift", "risk", "cost", "tax", "cash", "restrictions", "location")
    assert e.null_drivers == () and e.coalitions == 128
    assert e.trades, "the household trades"
    full = solve_household_continuous(hh, weights)
    for t in e.trades:
        assert sum(t.contributions_shares.values()) == pytest.approx(t.trade_shares, abs=1e-5)
    taxable_vti = [t for t in e.trades if t.account_id == "taxable" and t.symbol == "VTI"]
    assert not taxable_vti, "a restricted security is not traded"
    assert e.efficiency_error_shares < 1e-5
    a = [x.account_id for x in hh.accounts].index("ira")
    [ira_bnd] = [t for t in e.trades if t.account_id == "ira" and t.symbol == "BND"]
    assert ira_bnd.trade_shares == pytest.approx(float(full.trade_shares(hh, a)[0]), rel=1e-9)


def test_a_negative_tax_budget_is_a_motive_no_coalition_is_valued_unsolved() -> None:
    """A tax budget of -$500 forces losses to be realized: even with every driver off the
    household sells at a loss (the base is not "no trade"), so every coalition is solved and each
    trade is the base plus its contributions. (Valued "no trade" unsolved, the empty and the
    cost-only coalitions would move 125 shares of BND into the drivers' values.)"""
    taxable = snap("taxable", "taxable", {"BND": [(400, 120.0, 800)]}, symbols=TWO)
    ira = snap("ira", "tax_deferred", {"VTI": [(240, 250.0, 800)]}, symbols=TWO)
    hh = household_input([taxable, ira], SIXTY_FORTY, RebalanceContext(tax_budget_usd=-500.0))
    weights = household_weights({})
    e = explain_household(hh, weights)
    assert e.skipped_coalitions == 0 and e.resolves == e.coalitions
    [bnd] = [t for t in e.trades if t.account_id == "taxable" and t.symbol == "BND"]
    assert bnd.base_shares < -100  # the budget alone sells about 125 shares
    off = {d: 0.0 for d in e.drivers}
    alone = solve_household_continuous(hh, {**weights, **off})
    assert bnd.base_shares == pytest.approx(float(alone.trade_shares(hh, 0)[0]), abs=1e-6)
    for t in e.trades:
        assert t.base_shares + sum(t.contributions_shares.values()) == pytest.approx(t.trade_shares, abs=1e-6)


def test_a_driver_at_weight_zero_is_not_a_player() -> None:
    taxable, ira = _bond_in_taxable()
    hh = household_input([taxable, ira], SIXTY_FORTY)
    e = explain_household(hh, household_weights({"location": 0.0}))
    assert "location" in e.null_drivers and "location" not in e.drivers
    assert e.trades == ()  # nothing trades without location (and nothing to explain)


def test_the_definition_equals_shaps_exact_explainer() -> None:
    """`shapley_from_coalitions` (by definition; the optimizer's what-if has no `shap`) against
    `shap.explainers.Exact` on a random vector game of 5 players."""
    rng = np.random.default_rng(7)
    table = {tuple(b == "1" for b in np.binary_repr(i, 5)): rng.normal(size=4) for i in range(32)}
    table[(False,) * 5] = np.zeros(4)
    ours = shapley_from_coalitions(lambda on: table[on], 5, 4)
    theirs = exact_shapley(lambda on: table[on], 5)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(ours.sum(axis=0), table[(True,) * 5], atol=1e-12)


def test_a_failed_explanation_leaves_the_proposal_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A coalition the solver cannot solve fails the explanation, not the proposal."""
    from trimtab.rebalance import household_explain
    from trimtab.rebalance.errors import SolverFailed

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise SolverFailed("every solver failed", solver="CLARABEL", status_text="max iterations")

    monkeypatch.setattr(household_explain, "solve_household_continuous", fail)
    taxable, ira = _bond_in_taxable()
    p = propose_household([taxable, ira], SIXTY_FORTY, explain=True)
    assert p.explanation is None
    assert any(n.startswith("no explanation: SolverFailed") for n in p.notes)
    assert [o.symbol for o in p.account("taxable").orders] == ["BND", "VTI"]
