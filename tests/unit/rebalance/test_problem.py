"""The compiled problem: shape buckets, the cache, DPP, and the fast path against cvxpy's own."""

from __future__ import annotations

import numpy as np
import pytest

from trimtab.rebalance import DEFAULT_DRIVER_WEIGHTS, DEFAULT_TUNING, from_snapshot
from trimtab.rebalance.drivers import validate_weights
from trimtab.rebalance.objective import evaluate
from trimtab.rebalance.problem import (
    IPM_SOLVER,
    LOTS_PER_SECURITY_BUCKETS,
    SECURITY_BUCKETS,
    Shape,
    bucket,
    compiled,
)
from trimtab.rebalance.solve import (
    Bans,
    _sellable,
    _to_shares,
    assemble,
    canonical_lot_split,
    shape_of,
)

from .conftest import drifted_account


def test_buckets() -> None:
    assert [bucket(n, SECURITY_BUCKETS) for n in (1, 8, 9, 20, 33, 256, 300, 500, 600)] == \
        [4, 8, 12, 20, 40, 256, 320, 512, 1024]
    assert [bucket(n, LOTS_PER_SECURITY_BUCKETS) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 3, 6, 64, 128]
    assert Shape.for_sizes(20, 3) == Shape(20, 3, 0)
    assert Shape.for_sizes(500, 1, 15, 3, True) == Shape(512, 1, 16, 4, True)


def test_one_compiled_problem_per_shape_is_reused() -> None:
    a = from_snapshot(drifted_account(5, seed=1))
    b = from_snapshot(drifted_account(7, seed=2))
    assert shape_of(a) == shape_of(b)
    assert compiled(shape_of(a)) is compiled(shape_of(b))
    assert compiled(shape_of(a)).problem.is_dpp()


@pytest.mark.parametrize("mode", ["clarabel", "auto"])
@pytest.mark.parametrize("n, gains", [(6, True), (20, True), (12, False)])
def test_fast_path_gives_cvxpys_solution(n: int, gains: bool, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's solve against cvxpy's own path on the same compiled problem: with
    TRIMTAB_SOLVER=clarabel the fast path (Clarabel on the probed affine map) answers, by default
    the structured solver (ipm.py) does."""
    monkeypatch.setenv("TRIMTAB_SOLVER", mode)
    inp = from_snapshot(drifted_account(n, gains=gains, reserve=2_000))
    shape = shape_of(inp)
    prob = compiled(shape)
    assert prob.fast is not None, "the probed affine map must pass its self-check"
    weights = validate_weights(DEFAULT_DRIVER_WEIGHTS)
    data = assemble(inp, weights, DEFAULT_TUNING, shape)
    fast = prob.solve(data)
    slow = prob._solve_cvxpy(data)
    assert fast.status == "optimal"
    assert fast.solver == ("CLARABEL" if mode == "clarabel" else IPM_SOLVER), fast.solver
    # The same optimum: the objective agrees to far below a cent of any account. The argmin
    # agrees less tightly along directions of small curvature (the solvers' tolerances bound the
    # objective's gap, not the distance to the argmin): 1e-6 of the account is $1 on $1M.
    (fs, fb), (ss, sb) = _to_shares(inp, shape, fast), _to_shares(inp, shape, slow)
    assert evaluate(inp, weights, fs, fb, DEFAULT_TUNING)["total"] == pytest.approx(
        evaluate(inp, weights, ss, sb, DEFAULT_TUNING)["total"], rel=0, abs=1e-11)
    np.testing.assert_allclose(fast.buy, slow.buy, atol=1e-6)
    # Without gains every lot of a security is interchangeable: the solvers may split a sale
    # differently among them (a face of optima); the canonical split makes the shares agree.
    sellable = _sellable(inp, weights, Bans())
    tol = 1e-6 * inp.value_usd / inp.lot_price_usd
    np.testing.assert_array_less(np.abs(canonical_lot_split(inp, fs, sellable)
                                        - canonical_lot_split(inp, ss, sellable)), tol + 1e-9)
    if gains:  # distinct lots: the optimum is unique at the lot level too
        np.testing.assert_allclose(fast.sell, slow.sell, atol=1e-7)


def test_canonical_lot_split_fills_interchangeable_lots_in_rank_order() -> None:
    inp = from_snapshot(drifted_account(6, gains=False, lots_per_security=3))
    sellable = np.ones(inp.n_lots, dtype=bool)
    lots0 = np.flatnonzero(inp.lot_security == 0)
    sell = np.zeros(inp.n_lots)
    sell[lots0] = inp.lot_shares[lots0] * 0.5  # half of each lot: the same total either way
    out = canonical_lot_split(inp, sell, sellable)
    total = float(sell[lots0].sum())
    assert out[lots0].sum() == pytest.approx(total)
    assert out[lots0[0]] == pytest.approx(min(total, inp.lot_shares[lots0[0]]))
    sellable[lots0[0]] = False  # a banned lot is never given a sale it was not given
    out = canonical_lot_split(inp, sell, sellable)
    assert out[lots0[0]] == sell[lots0[0]]


def test_factor_shapes_compile_with_a_fast_path() -> None:
    prob = compiled(Shape(8, 1, 4))
    assert prob.problem.is_dpp() and prob.fast is not None


def test_shapes_with_groups_and_impact_compile_with_a_fast_path() -> None:
    # The impact term brings power cones: the fast path must pass them to Clarabel as cvxpy does.
    prob = compiled(Shape(8, 2, 4, 2, True))
    assert prob.problem.is_dpp() and prob.fast is not None
    # The factor loadings are an n x k Parameter: nothing of size n x n exists in the problem.
    sizes = [p.size for p in prob.problem.parameters()]
    assert max(sizes) <= 8 * 4 and "factor_scale" in prob.p


def test_the_drift_of_many_rows_at_once_equals_the_drift_of_each() -> None:
    # The wash-sale estimates evaluate the drift term of one deviation per group in one pass;
    # it must be the same function as the objective's (factor model, groups and bands included).
    from trimtab.rebalance import FactorModel, RebalanceContext, SecurityInfo
    from trimtab.rebalance.objective import weighted_drift, weighted_drift_rows

    snap = drifted_account(8, seed=3)
    symbols = [p.symbol for p in snap.positions]
    rng = np.random.default_rng(3)
    ctx = RebalanceContext(
        securities={s: SecurityInfo(substitute_group="g" if i < 3 else None) for i, s in enumerate(symbols)},
        factor_model=FactorModel(name="t", symbols=tuple(symbols),
                                 loadings=rng.normal(0, 0.15, (len(symbols), 2)),
                                 specific_var=rng.uniform(0.01, 0.05, len(symbols))))
    inp = from_snapshot(snap, ctx)
    assert inp.band_membership.shape[1] and inp.risk_model_factors == 2
    weights = validate_weights({**DEFAULT_DRIVER_WEIGHTS, "risk": 0.7})
    rows = rng.normal(0.0, 0.04, (6, inp.n_securities))
    expected = [weighted_drift(inp, r, weights, DEFAULT_TUNING) for r in rows]
    np.testing.assert_allclose(weighted_drift_rows(inp, rows, weights, DEFAULT_TUNING), expected, rtol=1e-12)


def test_every_solver_is_time_limited_and_a_timeout_is_a_typed_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A solve cannot block for ever: each solver runs under a wall-clock limit, and a problem no
    solver finishes within it is `SolverFailed` (typed, a safe fallback), never a hang. The
    structured solver (ipm.py) has no clock: it stops after a bounded number of iterations of
    O(n) work each (about 5 ms at 500 securities), so Clarabel and its fallbacks are what this
    limits (TRIMTAB_SOLVER=clarabel)."""
    from trimtab.rebalance import ipm
    from trimtab.rebalance import problem as P
    from trimtab.rebalance.errors import SolverFailed

    assert 0 < ipm.OPTIONS[0] <= 100  # the structured solver's iteration bound
    monkeypatch.setenv("TRIMTAB_SOLVER", "clarabel")
    assert all(any("time_limit" in k for k in opts) for opts in P.SOLVER_OPTIONS.values())
    inp = from_snapshot(drifted_account(8, gains=True, reserve=500))
    shape = shape_of(inp)
    fresh = P.CompiledProblem(shape)  # its own settings, not the process-wide cache's
    tiny = {name: {k: (1e-9 if "time_limit" in k else v) for k, v in opts.items()}
            for name, opts in P.SOLVER_OPTIONS.items()}
    monkeypatch.setattr(P, "SOLVER_OPTIONS", tiny)
    fresh.compile()
    with pytest.raises(SolverFailed):
        fresh.solve(assemble(inp, validate_weights(DEFAULT_DRIVER_WEIGHTS), DEFAULT_TUNING, shape))


def test_the_per_tuning_values_are_those_of_the_tuning_asked() -> None:
    """`reg_tau` and `lot_tie_break` keep their values in the input for the last tuning: another
    tuning (and an equal one built anew) gets its own values, the same as computed afresh."""
    from dataclasses import replace

    from trimtab.rebalance.drivers import Tuning
    from trimtab.rebalance.objective import lot_tie_break, reg_tau

    inp = from_snapshot(drifted_account(8, seed=7, gains=True, lots_per_security=2))

    def fresh(tun: Tuning) -> tuple[np.ndarray, np.ndarray]:
        gain_fraction = 1.0 - inp.lot_basis_usd_per_share / inp.lot_price_usd
        return (np.maximum(inp.target_weight, tun.tau_min_weight),
                tun.tie_break * (1.5 + 0.5 * np.clip(gain_fraction, -1.0, 1.0)))

    other = replace(DEFAULT_TUNING, tie_break=3e-7, tau_min_weight=0.05)
    for tun in (DEFAULT_TUNING, other, DEFAULT_TUNING, replace(other), other):
        tau, tie = fresh(tun)
        for _ in range(2):
            np.testing.assert_array_equal(reg_tau(inp, tun), tau)
            np.testing.assert_array_equal(lot_tie_break(inp, tun), tie)
        assert not lot_tie_break(inp, tun).flags.writeable and not reg_tau(inp, tun).flags.writeable
    for k in (1, 2, 3, 8):
        np.testing.assert_array_equal(inp.lot_slots(k), inp.lot_security * k + inp.lot_rank)
