"""GARCH(1,1) fits recover known parameters; statistical factors keep what they promise; the
Kupiec and Christoffersen statistics by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trimtab.risk.domain.factors import statistical_factors
from trimtab.risk.domain.garch import filter_variance, fit_garch
from trimtab.risk.domain.var_tests import christoffersen_independence, ewma_variance, kupiec_pof


def simulate_garch(n: int, omega: float, alpha: float, beta: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v, out = omega / (1 - alpha - beta), np.empty(n)
    for t in range(n):
        out[t] = math.sqrt(v) * rng.standard_normal()
        v = omega + alpha * out[t] ** 2 + beta * v
    return out


def test_garch_recovers_the_parameters_of_a_simulated_path():
    r = simulate_garch(5000, 2e-6, 0.08, 0.90, seed=4)
    fit = fit_garch(r, model_version="7")
    assert fit.alpha == pytest.approx(0.08, abs=0.03) and fit.beta == pytest.approx(0.90, abs=0.04)
    assert fit.long_run_var_daily == pytest.approx(2e-6 / 0.02, rel=0.35)
    assert fit.model_version == "7" and fit.observations == 5000
    # forecasts revert to the long-run variance; the next-day one is the recursion's next step
    assert fit.forecast_var(2000) / 2000 == pytest.approx(fit.long_run_var_daily, rel=0.05)
    path = filter_variance(r, fit.omega, fit.alpha, fit.beta, fit.long_run_var_daily)
    nxt = fit.omega + fit.alpha * r[-1] ** 2 + fit.beta * path[-1]
    assert fit.next_var_daily == pytest.approx(nxt, rel=0.05)
    with pytest.raises(ValueError, match="at least"):
        fit_garch(r[:100])


def test_statistical_factors_keep_variances_and_rebuild_a_low_rank_covariance():
    rng = np.random.default_rng(2)
    b = rng.normal(size=(8, 2)) * 0.01
    cov = b @ b.T + np.diag(rng.uniform(1e-5, 4e-5, 8))
    fm = statistical_factors(list("ABCDEFGH"), cov, max_factors=3, explained=0.999)
    assert fm.exposures.shape == (3, 8)
    np.testing.assert_allclose(np.diag(fm.covariance()), np.diag(cov), rtol=1e-12)
    full = statistical_factors(list("ABCDEFGH"), cov, max_factors=8, explained=1.0)
    np.testing.assert_allclose(full.covariance(), cov, atol=1e-15)
    assert 0 < fm.explained_fraction <= 1 and np.all(fm.specific_var_daily >= 0)


def test_kupiec_by_hand():
    assert kupiec_pof(5, 100, 0.05)[0] == pytest.approx(0.0)
    x, t, p = 10, 100, 0.05
    lr = -2 * ((t - x) * math.log(1 - p) + x * math.log(p)
               - (t - x) * math.log(1 - x / t) - x * math.log(x / t))
    got, pval = kupiec_pof(x, t, p)
    assert got == pytest.approx(lr) and got == pytest.approx(4.1308, abs=1e-3)
    assert pval == pytest.approx(0.0421, abs=1e-3)
    assert kupiec_pof(0, 250, 0.01)[0] == pytest.approx(-2 * 250 * math.log(0.99))


def test_christoffersen_sees_clustering():
    spread = (np.random.default_rng(8).random(2000) < 0.05).astype(int)  # independent hits
    clustered = np.zeros(2000, dtype=int)
    clustered[100:150] = 1
    assert christoffersen_independence(spread)[1] > 0.05
    assert christoffersen_independence(clustered)[1] < 1e-6


def test_ewma_variance_is_the_riskmetrics_recursion():
    r = np.array([0.01, -0.02, 0.005])
    v = ewma_variance(r, 0.94, 1e-4)
    assert v.tolist() == pytest.approx([1e-4, 0.94e-4 + 0.06e-4, 0.94 * (0.94e-4 + 0.06e-4) + 0.06 * 4e-4])
