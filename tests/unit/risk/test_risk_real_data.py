"""The model on real prices: 20 S&P 500 stocks (skfolio's shipped dataset), daily closes of 2019."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time

import numpy as np
import pytest

from trimtab.risk.domain.model import RiskModel
from trimtab.risk.domain.portfolio import Prior, risk_view


@pytest.fixture(scope="module")
def prices():
    from skfolio.datasets import load_sp500_dataset

    # a quarter of 2018 first, so the model is warm on the first day of 2019
    return load_sp500_dataset().loc["2018-10-01":"2019-12-31"].round(6)


@pytest.fixture(scope="module")
def replayed(prices):
    """Tick every close in, reading every stock's annualized EWMA vol after each 2019 day."""
    model = RiskModel(0.94)
    path = []
    for ts, row in prices.iterrows():
        as_of = datetime.combine(ts.date(), time(21), tzinfo=UTC)
        for sym, price in row.items():
            model.on_tick(str(sym), ts.date(), float(price), as_of)
        if ts.year == 2019:
            path.append([model.covariance.daily_vol(s) * math.sqrt(252) for s in prices.columns])
    return model, np.array(path)


def test_2019_vols_are_plausible_and_track_realized_vol(prices, replayed):
    _, path = replayed
    mean_vol = path.mean(axis=0)
    assert np.all((mean_vol > 0.10) & (mean_vol < 0.80)), dict(zip(prices.columns, mean_vol, strict=True))
    # the EWMA forecast averaged over the year is close to the year's realized volatility
    r2019 = np.diff(np.log(prices.loc["2018-12-31":].to_numpy()), axis=0)
    realized = r2019.std(axis=0) * math.sqrt(252)
    assert np.all((mean_vol / realized > 0.75) & (mean_vol / realized < 1.33))


def test_year_end_model_is_the_textbook_recursion(prices, replayed):
    model, _ = replayed
    # the last day is still open: the model ends the trading day before it
    assert model.window_end == prices.index[-2].date()
    logret = np.diff(np.log(prices.iloc[:-1].to_numpy()), axis=0)
    s = np.zeros((20, 20))
    for r in logret:
        s = 0.94 * s + 0.06 * np.outer(r, r)
    expected = s / (1 - 0.94 ** len(logret))
    np.testing.assert_allclose(model.covariance.covariance(list(prices.columns)), expected, rtol=1e-8)


def test_diversification_on_real_data(replayed):
    model, _ = replayed
    cov = model.covariance
    vols = {s: cov.daily_vol(s) * math.sqrt(252) for s in cov.symbols}
    view = risk_view(cov, list(vols), Prior(), min_observations=20)
    assert view.prior_used == ()
    equal_weight = view.vol_annual({s: 1 / 20 for s in vols})
    # an equal-weight book of 20 large caps is well below its average stock, and above zero
    assert 0.05 < equal_weight < 0.8 * np.mean(list(vols.values()))
