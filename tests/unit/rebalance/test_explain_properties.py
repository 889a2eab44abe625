"""Shapley properties of the six-driver explanation, on the real optimizer: efficiency,
symmetry, null drivers, a two-security case computed by hand, the tax split and the coalitions
valued without a solve."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trimtab.rebalance import DEFAULT_DRIVER_WEIGHTS, explain, from_snapshot, propose, solve_trades
from trimtab.rebalance.explain import (
    EXPLAIN_DRIVERS,
    _Coalitions,
    _provably_idle,
    exact_shapley,
    shapley_values,
    structurally_null,
)
from trimtab.rebalance.solve import solve_continuous

from .conftest import drifted_account, make_snapshot

V0 = 100_000.0


def hand_account():  # type: ignore[no-untyped-def]
    """A 60 % (one long-term lot, basis half the price), B 40 % (no gain), targets 50/50, no
    cash, no trading costs: only drift and the tax of A's gain matter."""
    return make_snapshot(prices={"A": 100, "B": 50}, holdings={"A": [(600, 50.0, 800)], "B": 800},
                         targets={"A": 0.5, "B": 0.5}, half_spread_bps=0.0, commission=0.0,
                         tax_rates=(0.37, 0.20))


def test_a_two_security_case_matches_the_attribution_computed_by_hand() -> None:
    # Tax per unit of weight sold from A: c = (1 - 50/100) * 0.20 = 0.1. Drift alone sells A's
    # 0.1 excess and buys B with it; with the tax the optimum of 2 (0.1 - s)^2 + c s is
    # s = 0.1 - c/4 = 0.075 (inside the band, so the band term is idle). Tax alone trades
    # nothing. Two-player game: phi_drift = (v(D) + v(DG)) / 2, phi_gains = (v(DG) - v(D)) / 2.
    e = explain(propose(hand_account()), drivers=EXPLAIN_DRIVERS)
    by = {t.symbol: t for t in e.trades}
    v_d, v_dg = -0.1 * V0 / 100, -0.075 * V0 / 100  # A, in shares
    a = by["A"].contributions_shares
    assert by["A"].trade_shares == pytest.approx(v_dg, abs=0.01)
    assert a["drift"] == pytest.approx((v_d + v_dg) / 2, abs=0.01)  # -87.5 shares
    assert a["tax_gains"] == pytest.approx((v_dg - v_d) / 2, abs=0.01)  # +12.5 shares held back
    b = by["B"].contributions_shares
    assert b["drift"] == pytest.approx(175.0, abs=0.02) and b["tax_gains"] == pytest.approx(-25.0, abs=0.02)
    # No losses, no restrictions, no costs, cash neither short nor idle: nothing beyond solver-level
    # effects (the 1e-7 tie-break against the 1e-3 cash drag: ~1e-5 shares).
    for t in (by["A"], by["B"]):
        for d in ("tax_losses", "restrictions", "cost", "cash"):
            assert abs(t.contributions_shares[d]) < 1e-3, (t.symbol, d)


ACCOUNTS = {
    "losses-and-gains": lambda: drifted_account(10, gains=True, reserve=3_000, restricted=["S03"], seed=4),
    "deferred": lambda: drifted_account(8, gains=True, account_type="tax_deferred", reserve=2_000, seed=6),
    "cash-short": lambda: drifted_account(6, gains=True, cash_weight=0.0, reserve=6_000, seed=8),
}


@pytest.mark.parametrize("name", sorted(ACCOUNTS))
def test_six_drivers_are_efficient_and_agree_with_the_optimizer(name: str) -> None:
    snap = ACCOUNTS[name]()
    proposal = propose(snap)
    e = explain(proposal, drivers=EXPLAIN_DRIVERS, prune=True)
    assert e.drivers == EXPLAIN_DRIVERS and e.coalitions == 2 ** len(EXPLAIN_DRIVERS)
    full = solve_trades(from_snapshot(snap), DEFAULT_DRIVER_WEIGHTS)  # the optimizer, tax whole
    for t in e.trades:
        i = from_snapshot(snap).symbols.index(t.symbol)
        assert t.trade_shares == pytest.approx(full[i], rel=1e-9, abs=1e-9)
        assert t.base_shares + sum(t.contributions_shares.values()) == pytest.approx(t.trade_shares, rel=1e-6, abs=1e-8)
    assert e.resolves >= e.coalitions - e.skipped_coalitions


def test_null_drivers_of_the_split_get_nothing() -> None:
    # Tax-deferred: neither half of the tax term has a coefficient; nothing restricted.
    e = explain(propose(ACCOUNTS["deferred"]()), drivers=EXPLAIN_DRIVERS)
    for t in e.trades:
        for d in ("tax_losses", "tax_gains", "restrictions"):
            assert abs(t.contributions_shares[d]) < 1e-9
    # Only gains held (basis below price everywhere): harvesting has nothing to harvest.
    snap = make_snapshot(prices={"A": 100, "B": 50, "C": 20},
                         holdings={"A": [(300, 60.0, 900)], "B": [(500, 30.0, 100)], "C": [(1000, 10.0, 700)]},
                         targets={"A": 0.2, "B": 0.4, "C": 0.4}, cash=5_000)
    e = explain(propose(snap), drivers=EXPLAIN_DRIVERS)
    assert any(abs(t.contributions_shares["tax_gains"]) > 1 for t in e.trades)
    for t in e.trades:
        assert abs(t.contributions_shares["tax_losses"]) < 1e-9


def test_symmetric_drivers_get_equal_values() -> None:
    # Two players that switch the same optimizer term (drift is on if either is on) have
    # identical effect in every coalition: shap must give them equal values. A third player
    # (tax) is asymmetric to both.
    inp = from_snapshot(drifted_account(6, gains=True, reserve=2_000, seed=13))
    memo: dict[tuple[bool, ...], np.ndarray] = {}

    def trade(on: tuple[bool, ...]) -> np.ndarray:
        if on not in memo:
            w = dict(DEFAULT_DRIVER_WEIGHTS)
            w["drift"] = DEFAULT_DRIVER_WEIGHTS["drift"] if (on[0] or on[1]) else 0.0
            w["tax"] = DEFAULT_DRIVER_WEIGHTS["tax"] if on[2] else 0.0
            memo[on] = solve_trades(inp, w)
        return memo[on]

    phi = exact_shapley(trade, 3)
    assert np.abs(phi[0]).max() > 1.0
    np.testing.assert_allclose(phi[0], phi[1], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(phi.sum(axis=0), trade((True,) * 3) - trade((False,) * 3), atol=1e-8)


def test_the_split_changes_only_the_tax_objective() -> None:
    inp = from_snapshot(ACCOUNTS["losses-and-gains"]())
    c = _Coalitions(inp, DEFAULT_DRIVER_WEIGHTS, EXPLAIN_DRIVERS)
    coef = inp.lot_tax_objective
    assert (coef < 0).any() and (coef > 0).any()
    on = dict.fromkeys(EXPLAIN_DRIVERS, True)
    w, losses_only = c(tuple({**on, "tax_gains": False}.values()))
    assert w["tax"] == 1.0
    np.testing.assert_array_equal(losses_only.lot_tax_objective, np.where(coef < 0, coef, 0.0))
    np.testing.assert_array_equal(losses_only.lot_tax_per_weight, inp.lot_tax_per_weight)  # budget row
    _, gains_only = c(tuple({**on, "tax_losses": False}.values()))
    np.testing.assert_array_equal(gains_only.lot_tax_objective, np.where(coef > 0, coef, 0.0))
    w, same = c(tuple({**on, "tax_losses": False, "tax_gains": False}.values()))
    assert w["tax"] == 0.0 and same is inp
    # Both halves on is the optimizer's own problem, by construction and by solve.
    w, same = c(tuple(on.values()))
    assert same is inp and w == dict(DEFAULT_DRIVER_WEIGHTS)


@pytest.mark.parametrize("name", sorted(ACCOUNTS))
def test_coalitions_valued_without_a_solve_do_solve_to_no_trade(name: str) -> None:
    inp = from_snapshot(ACCOUNTS[name]())
    idle = _provably_idle(inp, EXPLAIN_DRIVERS, DEFAULT_DRIVER_WEIGHTS)
    c = _Coalitions(inp, DEFAULT_DRIVER_WEIGHTS, EXPLAIN_DRIVERS)
    checked = 0
    for on in itertools.product([False, True], repeat=len(EXPLAIN_DRIVERS)):
        if idle(on):
            w, variant = c(on)
            assert (solve_continuous(variant, w).trade_shares == 0.0).all(), on
            checked += 1
    # drift, risk, cash and tax_losses off; the other four drivers free.
    assert checked == 2 ** (len(EXPLAIN_DRIVERS) - 4)


@pytest.mark.parametrize("name", sorted(ACCOUNTS))
def test_pruning_gives_the_same_values_with_fewer_solves(name: str) -> None:
    inp = from_snapshot(ACCOUNTS[name]())
    full = shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=EXPLAIN_DRIVERS)
    pruned = shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=EXPLAIN_DRIVERS, prune=True)
    assert full.skipped == 0 and full.coalitions == pruned.coalitions == 2 ** len(EXPLAIN_DRIVERS)
    np.testing.assert_allclose(pruned.values, full.values, atol=1e-9, rtol=1e-9)
    np.testing.assert_array_equal(pruned.full, full.full)
    assert pruned.resolves < full.resolves
    if name == "deferred":
        # No tax coefficient, nothing restricted or screened, no factor model: 5 null drivers,
        # 2^3 distinct coalitions, of which drift and cash both off are idle (the empty one
        # solved): 7 solved, 249 not.
        null = {"tax_losses", "tax_gains", "restrictions", "risk", "esg"}
        assert structurally_null(inp, EXPLAIN_DRIVERS) == null
        assert pruned.skipped == 2 ** len(EXPLAIN_DRIVERS) - 7
        for d in sorted(null):
            assert np.abs(pruned.values[EXPLAIN_DRIVERS.index(d)]).max() < 1e-12  # null (shap float sums)
    else:
        assert pruned.skipped >= 7  # the idle coalitions at least (the empty one is solved)


def test_drivers_are_checked() -> None:
    inp = from_snapshot(hand_account())
    with pytest.raises(ValueError, match="tax whole"):
        shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=("drift", "tax", "tax_losses", "tax_gains"))
    with pytest.raises(ValueError, match="tax whole"):
        shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=("drift", "tax_losses"))
    with pytest.raises(ValueError, match="unknown"):
        shapley_values(inp, DEFAULT_DRIVER_WEIGHTS, drivers=("drift", "location"))


@pytest.mark.parametrize("name", sorted(ACCOUNTS))
def test_the_event_carries_what_a_plain_replay_recomputes(name: str) -> None:
    # The split game contains the optimizer-driver game (both halves equal): its values, from the
    # same (pruned) solves, must be what `explain(proposal)` computes on its own, to the bit that
    # survives the event's 6 decimal places, so a replay (audit) finds the event identical.
    from trimtab.rebalance import explanation_payload

    proposal = propose(ACCOUNTS[name]()).to_event()
    split = explain(proposal, drivers=EXPLAIN_DRIVERS, prune=True)
    plain = explain(proposal)
    assert split.optimizer_drivers == plain.drivers
    for a, b in zip(split.optimizer_trades, plain.trades, strict=True):
        assert a.symbol == b.symbol
        for d in plain.drivers:
            assert a.contributions_shares[d] == pytest.approx(b.contributions_shares[d], abs=1e-10)
    assert explanation_payload(split).trades == explanation_payload(plain).trades
