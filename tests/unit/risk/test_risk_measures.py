"""Risk measures by hand: VaR/CVaR (parametric and historical), drawdown, beta, tracking error,
concentration, liquidity, the score; and that many portfolios at once equal one at a time."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import norm

from trimtab.risk.domain import measures as m
from trimtab.risk.domain.concentration import concentration, liquidity_days
from trimtab.risk.domain.profile import RiskInputs, measure
from trimtab.risk.domain.score import downside_1y, score, vol_of_score


def test_parametric_var_and_cvar_against_scipy():
    sigma = np.array([0.01, 0.02])
    for level in (0.95, 0.99):
        z = norm.ppf(level)
        np.testing.assert_allclose(m.parametric_var(sigma, level), z * sigma)
        np.testing.assert_allclose(m.parametric_var(sigma, level, 10), z * sigma * math.sqrt(10))
        # expected shortfall of a normal: sigma * pdf(z) / (1 - level)
        np.testing.assert_allclose(m.parametric_cvar(sigma, level), sigma * norm.pdf(z) / (1 - level))
    assert m.parametric_cvar(sigma, 0.95)[0] == pytest.approx(0.020627, abs=1e-6)


def test_historical_var_cvar_by_hand():
    # 100 days with simple returns -0.001, -0.002, ..., -0.100 (shuffled): at 95 % k = 5, the five
    # worst losses are 0.100..0.096: VaR is the 5th worst (0.096), CVaR their mean (0.098)
    simple = -np.arange(1, 101) / 1000.0
    rng = np.random.default_rng(3)
    r = np.log1p(rng.permutation(simple))[:, None]
    var, cvar = m.historical_var_cvar(np.array([[1.0]]), r, 0.95)
    assert var[0] == pytest.approx(0.096) and cvar[0] == pytest.approx(0.098)
    var99, cvar99 = m.historical_var_cvar(np.array([[0.5]]), r, 0.99)  # k = 1, half invested
    assert var99[0] == pytest.approx(0.05) and cvar99[0] == pytest.approx(0.05)


def test_ten_day_historical_uses_overlapping_compounded_returns():
    r = np.log(np.array([1.01, 0.98, 1.03, 0.97, 1.0, 1.02]))[:, None]
    ten = m.simple_returns(r, 3)
    want = [1.01 * 0.98 * 1.03 - 1, 0.98 * 1.03 * 0.97 - 1, 1.03 * 0.97 * 1.0 - 1, 0.97 * 1.0 * 1.02 - 1]
    np.testing.assert_allclose(ten[:, 0], want)


def test_max_drawdown_by_hand():
    r = np.log(np.array([1.10, 0.80, 1.05, 0.90]))[:, None]
    # wealth 1.1, .88, .924, .8316: peak 1.1, trough .8316
    assert m.max_drawdown(np.array([[1.0]]), r)[0] == pytest.approx(1 - 0.8316 / 1.1)
    # half in cash: the daily-rebalanced path of +5 %, -10 %, +2.5 %, -5 %
    half = 1.05 * 0.90 * 1.025 * 0.95
    assert m.max_drawdown(np.array([[0.5]]), r)[0] == pytest.approx(1 - half / 1.05)


def test_beta_and_tracking_error():
    cov = np.array([[4e-4, 1e-4], [1e-4, 1e-4]])
    t = np.array([0.5, 0.5])
    W = np.array([[0.5, 0.5], [1.0, 1.0], [1.0, 0.0]])
    beta = m.beta_to(W, t, cov)
    assert beta[0] == pytest.approx(1.0) and beta[1] == pytest.approx(2.0)
    # beta of asset 1: cov(a1, t) / var(t) = (.5 * 4e-4 + .5 * 1e-4) / (.25 * (4 + 1 + 2) * 1e-4)
    assert beta[2] == pytest.approx(2.5e-4 / 1.75e-4)
    te = m.tracking_error_annual(W, t, cov)
    assert te[0] == pytest.approx(0.0)
    d = np.array([0.5, -0.5])
    assert te[2] == pytest.approx(math.sqrt(d @ cov @ d * 252))


def test_concentration_by_hand():
    W = np.array([[0.30, 0.20, 0.10, 0.10, 0.10, 0.05, 0.05], [0, 0, 0, 0, 0, 0, 0.9]])
    syms = ["A", "B", "C", "D", "E", "F", "X"]
    sectors = {"A": "Tech", "B": "Tech", "C": "Energy", "D": "Energy", "E": "Energy", "F": "Energy"}
    c = concentration(W, syms, sectors)
    assert c.largest_weight.tolist() == [0.30, 0.9] and c.largest_index.tolist() == [0, 6]
    assert c.top5_weight[0] == pytest.approx(0.80)
    assert c.herfindahl[0] == pytest.approx(0.09 + 0.04 + 3 * 0.01 + 2 * 0.0025)
    assert c.sector_names[c.largest_sector_index[0]] == "Tech"
    assert c.largest_sector_weight[0] == pytest.approx(0.5)
    # X has no sector: a book all in X has no largest sector (unclassified is not a sector)
    assert c.largest_sector_index[1] == -1 and c.largest_sector_weight[1] == 0


def test_liquidity_days_by_hand():
    shares = np.array([[10_000, 500, 0], [0, 0, 1_000]])
    adv = np.array([100_000, 1_000, np.nan])
    # at 20 % of ADV: 10,000 / 20,000 = 0.5 day; 500 / 200 = 2.5 days (the slowest)
    days = liquidity_days(shares, adv, 0.2)
    assert days[0] == pytest.approx(2.5)
    assert np.isnan(days[1])  # the only holding has no known ADV: unknown, not zero


def test_score_meaning():
    assert int(score(0.0)) == 1  # cash
    assert int(score(0.20)) == round(100 * (1 - math.exp(-1.6448536 * 0.20)))  # 28
    assert int(score(0.20)) == 28 and int(score(5.0)) == 99
    vols = np.linspace(0.01, 1.0, 50)
    assert np.all(np.diff(score(vols)) >= 0)
    for s in (5, 22, 50, 90):
        assert int(score(vol_of_score(s))) == s
        assert downside_1y(vol_of_score(s)) == pytest.approx(s / 100)


def test_many_portfolios_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(5)
    n, T = 6, 300
    a = rng.normal(size=(n, n))
    cov = a @ a.T * 1e-5 + np.eye(n) * 1e-5
    r = rng.multivariate_normal(np.zeros(n), cov, T)
    syms = tuple("ABCDEF")
    inputs = RiskInputs(syms, cov, r, syms, {"A": "Tech", "B": "Tech"})
    W = rng.dirichlet(np.ones(n), 5) * 0.9
    t = np.full(n, 1 / n)
    batch = measure(W, inputs, t)
    for i in range(5):
        (one,) = measure(W[i], inputs, t)
        a, b = dataclasses.asdict(one), dataclasses.asdict(batch[i])
        assert a.keys() == b.keys()
        for key in a:  # equal up to the last bits of a blocked matrix product
            exact = b[key] is None or isinstance(b[key], str | tuple)
            assert a[key] == (b[key] if exact else pytest.approx(b[key], rel=1e-12)), key
    p = batch[0]
    assert set(p.parametric) == {f"{k}_{lvl}_{h}d" for k in ("var", "cvar") for lvl in (95, 99) for h in (1, 10)}
    assert set(p.historical) == set(p.parametric) and p.historical_days == T
    assert p.parametric["cvar_99_1d"] > p.parametric["var_99_1d"] > p.parametric["var_95_1d"]


def test_historical_var_approaches_parametric_for_normal_returns():
    rng = np.random.default_rng(9)
    r = rng.normal(0, 0.01, (20_000, 1))
    var, cvar = m.historical_var_cvar(np.array([[1.0]]), r, 0.99)
    assert var[0] == pytest.approx(m.parametric_var(np.array([0.01]), 0.99)[0], rel=0.05)
    assert cvar[0] == pytest.approx(m.parametric_cvar(np.array([0.01]), 0.99)[0], rel=0.05)
