"""Stress tests: by hand on a toy history, and replays of the real 1990-2022 closes checked
against an independent computation from the skfolio data."""

from __future__ import annotations

import math
import time
from datetime import date

import numpy as np
import pytest

from trimtab.risk.domain.history import ReferenceHistory
from trimtab.risk.domain.scenarios import BUILTIN, Scenario, build_shocks, conditional_moves
from trimtab.risk.domain.stress import stress
from trimtab.risk.reference import load_reference


def toy_history() -> ReferenceHistory:
    dates = np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-01-07"))
    prices = np.array([[100, 50], [110, 50], [88, 45], [99, 40], [90, 44], [95, 45.0]])
    market = np.array([1000, 1050, 950, 900, 920, 940.0])
    return ReferenceHistory(dates, ("A", "B"), prices, market, sectors={"A": "Tech"})


def test_historical_scenario_by_hand():
    h = toy_history()
    sc = Scenario("t", "toy", "historical", date(2020, 1, 1), date(2020, 1, 5))
    shocks = build_shocks([sc], ["A", "B", "NEW"], h)
    # A 100 -> 90, B 50 -> 44, NEW (not in history) moves as the market 1000 -> 920
    np.testing.assert_allclose(shocks.shocks[:, 0], [-0.10, -0.12, -0.08])
    assert shocks.proxied == (("NEW",),) and shocks.path_days[0] == (date(2020, 1, 1), date(2020, 1, 5))
    W = np.array([[1.0, 0, 0], [0.5, 0, 0], [0, 0, 0]])
    res = stress(W, shocks)
    np.testing.assert_allclose(res.pnl[:, 0], [-0.10, -0.05, 0.0])
    # all in A: value 1, 1.10, .88, .99, .90: worst fall from the 1.10 peak to .88
    assert res.worst[0, 0] == pytest.approx(1 - 0.88 / 1.10)
    # half in A, half cash: 1, 1.05, .94: from the 1.05 peak
    assert res.worst[1, 0] == pytest.approx(1 - 0.94 / 1.05)
    assert res.worst[2, 0] == 0.0


def test_a_window_starting_on_a_holiday_starts_at_the_previous_close():
    h = toy_history()
    # 2020-01-03 (row 2, A = 88) to a day after the history's last: ends at its last close
    assert h.window(date(2020, 1, 3), date(2020, 2, 1)) == (2, 5)
    with pytest.raises(ValueError, match="does not cover"):
        h.window(date(2019, 1, 1), date(2019, 6, 1))


def test_conditional_propagation_by_hand():
    s1, s2, rho = 0.02, 0.01, 0.6
    cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    out = conditional_moves(cov, np.array([True, False]), np.array([-0.3, 0.0]))
    # E[r2 | r1 = x] = rho * s2 / s1 * x
    np.testing.assert_allclose(out, [-0.3, rho * s2 / s1 * -0.3])


def test_sector_and_vector_shocks():
    h = toy_history()
    cov = np.array([[4e-4, 1e-4], [1e-4, 1e-4]])
    sector = Scenario("s", "tech", "sector", shocks={"Tech": -0.2})
    flat = Scenario("v", "vec", "vector", shocks={"B": -0.1}, propagate=False)
    shocks = build_shocks([sector, flat], ["A", "B"], h, cov)
    np.testing.assert_allclose(shocks.shocks[:, 0], [-0.2, -0.2 * 1e-4 / 4e-4])
    np.testing.assert_allclose(shocks.shocks[:, 1], [0.0, -0.1])


@pytest.fixture(scope="module")
def ref():
    return load_reference()


@pytest.fixture(scope="module")
def frame():
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    return load_sp500_dataset(), load_sp500_index()


def test_covid_replay_equals_the_real_price_moves(ref, frame):
    prices, index = frame
    covid = next(s for s in BUILTIN if s.scenario_id == "covid-2020")
    syms = list(prices.columns)
    shocks = build_shocks([covid], [*syms, "NEWCO"], ref)
    want = prices.loc["2020-03-23"] / prices.loc["2020-02-19"] - 1
    np.testing.assert_allclose(shocks.shocks[:20, 0], want.to_numpy(), rtol=1e-12)
    spx = float(index.loc["2020-03-23"].iloc[0] / index.loc["2020-02-19"].iloc[0] - 1)
    assert shocks.shocks[20, 0] == pytest.approx(spx) and spx == pytest.approx(-0.339, abs=0.005)
    ew = np.full((1, 21), 1 / 20)
    ew[0, 20] = 0
    res = stress(ew, shocks)
    assert res.pnl[0, 0] == pytest.approx(want.mean())
    # the equal-weight book's deepest fall inside the window, computed from the closes directly
    path = (prices.loc["2020-02-19":"2020-03-23"] / prices.loc["2020-02-19"]).mean(axis=1)
    assert res.worst[0, 0] == pytest.approx(float((1 - path / path.cummax()).max()))


def test_dotcom_index_proxy_and_market_betas(ref):
    shocks = build_shocks(BUILTIN, ["AAPL", "KO", "NEWCO"], ref)
    cols = {s.scenario_id: j for j, s in enumerate(BUILTIN)}
    # the S&P 500 fell about 49 % from 24 Mar 2000 to 9 Oct 2002
    assert shocks.shocks[2, cols["dotcom-2000"]] == pytest.approx(-0.49, abs=0.01)
    betas, known = ref.betas(["AAPL", "KO", "NEWCO"])
    assert known.tolist() == [True, True, False] and betas[2] == 1.0
    assert betas[0] > betas[1]  # AAPL moves more with the market than KO
    np.testing.assert_allclose(shocks.shocks[:, cols["market-down-20"]], -0.2 * betas)


def test_factor_loadings_recover_a_constructed_security(ref):
    names, rows, f = ref.factor_returns()
    # a security that is exactly 1.2 market + 0.5 momentum-minus-market, built from the ETFs
    r = 1.2 * f[:, 0] + 0.5 * f[:, 1]
    prices = np.full(len(ref.dates), np.nan)
    prices[rows[0] - 1] = 100.0
    prices[rows] = 100.0 * np.cumprod(1 + r)
    h = ReferenceHistory(ref.dates, (*ref.symbols, "SYN"), np.column_stack([ref.prices, prices]),
                         ref.market, factor_names=ref.factor_names, factor_prices=ref.factor_prices)
    _, b, known = h.factor_loadings(["SYN"])
    assert known[0]
    np.testing.assert_allclose(b[0], [1.2, 0.5, 0, 0, 0, 0], atol=1e-8)
    shock = build_shocks([Scenario("m", "mom", "factor", shocks={"market": -0.05, "MTUM": -0.1})],
                         ["SYN"], h)
    assert shock.shocks[0, 0] == pytest.approx(1.2 * -0.05 + 0.5 * -0.1)


def test_ten_thousand_accounts_by_ten_scenarios_in_one_pass(ref):
    syms = list(ref.symbols)
    shocks = build_shocks(BUILTIN, syms, ref, np.eye(len(syms)) * 2e-4 + 5e-5)
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(len(syms)), 10_000) * 0.95
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        res = stress(W, shocks)
        best = min(best, time.perf_counter() - t0)
    assert res.pnl.shape == (10_000, 10) and best < 1.0, best
    # the batch equals one account at a time
    for i in (0, 4321, 9999):
        one = stress(W[i:i + 1], shocks)
        np.testing.assert_allclose(one.pnl[0], res.pnl[i], rtol=1e-12)
        np.testing.assert_allclose(one.worst[0], res.worst[i], rtol=1e-9, atol=1e-15)
