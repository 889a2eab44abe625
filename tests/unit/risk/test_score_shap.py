"""SHAP attribution of the risk score: efficiency, a two-asset case by hand, symmetry, null
exposures, the conditions feature, and the service glue on a real EWMA model (no I/O)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from trimtab.risk.domain.assessment import Limits
from trimtab.risk.domain.model import RiskModel
from trimtab.risk.domain.score import score
from trimtab.risk.domain.score_shap import CONDITIONS, attribute_score
from trimtab.risk.score_attribution import attribution

SQRT252 = math.sqrt(252)
Z = 1.6448536269514722


def downside_pct(var_daily: float) -> float:
    return 100 * (1 - math.exp(-Z * math.sqrt(var_daily) * SQRT252))


def test_two_assets_by_hand() -> None:
    # sigma 1 %/day and 2 %/day, correlation 0.5, weights 60/40 (as in the portfolio tests).
    cov = np.array([[1e-4, 1e-4], [1e-4, 4e-4]])
    v_a, v_b = downside_pct(0.36e-4), downside_pct(0.16 * 4e-4)
    v_ab = downside_pct(1.48e-4)
    a = attribute_score({"A": 0.6, "B": 0.4, "CASH": 0.0}, ["A", "B"], cov)
    phi = dict(zip(a.features, a.contributions_pct, strict=True))
    assert phi["A"] == pytest.approx(0.5 * v_a + 0.5 * (v_ab - v_b), abs=1e-9)
    assert phi["B"] == pytest.approx(0.5 * v_b + 0.5 * (v_ab - v_a), abs=1e-9)
    assert a.downside_pct == pytest.approx(v_ab) and a.score == int(score(a.vol_annual))
    assert sum(phi.values()) == pytest.approx(a.downside_pct, abs=1e-12)  # efficiency


def test_symmetric_exposures_get_equal_values_and_a_zero_weight_gets_nothing() -> None:
    cov = np.array([[2e-4, 5e-5, 1e-5], [5e-5, 2e-4, 1e-5], [1e-5, 1e-5, 1e-4]])
    a = attribute_score({"A": 0.3, "B": 0.3, "C": 0.2}, ["A", "B", "C"], cov)
    phi = dict(zip(a.features, a.contributions_pct, strict=True))
    assert phi["A"] == pytest.approx(phi["B"], rel=1e-12) and phi["A"] > phi["C"] > 0
    # A held-at-zero symbol is no feature; a symbol with no variance contributes nothing.
    cov0 = np.zeros((4, 4))
    cov0[:3, :3] = cov
    b = attribute_score({"A": 0.3, "B": 0.3, "C": 0.2, "D": 0.1}, ["A", "B", "C", "D"], cov0)
    assert dict(zip(b.features, b.contributions_pct, strict=True))["D"] == pytest.approx(0.0, abs=1e-12)


def test_market_conditions_take_the_regime_difference() -> None:
    # Today's covariance is 4x the baseline (volatility doubled): with one exposure the two
    # features split v(both) = d(4 s2) by Shapley: exposure = (d(s2) + d(4 s2)) / 2.
    cov = np.array([[4e-4]])
    a = attribute_score({"A": 1.0}, ["A"], cov, baseline_cov_daily=cov / 4)
    phi = dict(zip(a.features, a.contributions_pct, strict=True))
    calm, now = downside_pct(1e-4), downside_pct(4e-4)
    assert phi["A"] == pytest.approx((calm + now) / 2, abs=1e-9)
    assert phi[CONDITIONS] == pytest.approx((now - calm) / 2, abs=1e-9) and phi[CONDITIONS] > 0
    assert a.baseline_downside_pct == pytest.approx(calm)


def test_many_exposures_use_permutations_and_keep_efficiency() -> None:
    rng = np.random.default_rng(1)
    n = 20
    f = rng.normal(size=(n, 3)) * 0.01
    cov = f @ f.T + np.diag(rng.uniform(1e-5, 4e-4, n))
    syms = [f"S{i:02d}" for i in range(n)]
    w = dict(zip(syms, rng.dirichlet(np.ones(n)) * 0.95, strict=True))
    a = attribute_score(w, syms, cov)
    assert a.method.startswith("shapley-permutation")
    assert abs(a.contributions_pct.sum() - a.downside_pct) < 1e-9
    again = attribute_score(w, syms, cov)
    np.testing.assert_array_equal(a.contributions_pct, again.contributions_pct)  # fixed seed
    exact = attribute_score(dict(list(w.items())[:10]), syms, cov)
    assert exact.method.startswith("shapley-exact") and exact.evaluations == 2 ** 10


def test_the_service_glue_on_a_real_model() -> None:
    rng = np.random.default_rng(7)
    d0 = date(2024, 1, 1)
    rows = []
    prices = {"AAA": 100.0, "BBB": 50.0, "CCC": 20.0}
    vols = {"AAA": 0.01, "BBB": 0.02, "CCC": 0.03}
    for k in range(120):
        day = d0 + timedelta(days=k)
        for s in prices:
            prices[s] *= math.exp(vols[s] * rng.normal())
            rows.append((s, day, round(prices[s], 4), datetime(day.year, day.month, day.day, 20, tzinfo=UTC)))
    model = RiskModel.from_closes(rows, 0.94)
    out = attribution(model, {"AAA": Decimal("0.5"), "BBB": Decimal("0.3"), "CCC": Decimal("0.1"),
                              "CASH": Decimal("0.1")}, Limits())
    features = [c.feature for c in out["contributions"]]  # type: ignore[attr-defined]
    assert set(features) == {"AAA", "BBB", "CCC", CONDITIONS}
    total = sum(c.contribution_pct for c in out["contributions"])  # type: ignore[attr-defined]
    assert abs(total - out["downside_1y_pct"]) <= Decimal("0.0005")  # type: ignore[operator]
    assert out["baseline_downside_1y_pct"] is not None and 1 <= out["score"] <= 99  # type: ignore[operator]
    contrib = {c.feature: c.contribution_pct for c in out["contributions"]}  # type: ignore[attr-defined]
    assert contrib["CCC"] > 0 and contrib["AAA"] > 0
