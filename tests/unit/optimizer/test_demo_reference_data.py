"""The demo's reference data for the optimizer (`trimtab_dev.book.reference_data`): volatilities
of the last 60 real daily returns, the assumed ADV, and the risk service's statistical factor
model of the same returns, in the shapes the optimizer's reference API takes."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from trimtab.market_data.domain.history import load
from trimtab.optimizer.schemas import SecuritiesReferenceIn
from trimtab.shared.events import FactorModelContext
from trimtab_dev.book import ASSUMED_ADV_USD, MODELS, reference_data

SYMBOLS = sorted({s for targets in MODELS.values() for s in targets})
AS_OF = date(2019, 12, 31)


def test_volatilities_and_factor_model_come_from_the_last_60_real_returns() -> None:
    closes = load("sp500")
    ref = reference_data(closes, SYMBOLS, AS_OF)
    # independently: the 61 closes up to the date, their 60 daily returns
    window = closes.loc[: pd.Timestamp(AS_OF), SYMBOLS].tail(61)
    returns = window.pct_change().dropna()
    assert len(returns) == 60 and ref.window == (returns.index[0].date(), AS_OF)
    body = SecuritiesReferenceIn.model_validate(ref.securities).root  # what PUT takes
    assert [s.symbol for s in body] == SYMBOLS
    for s in body:
        assert float(s.sigma_daily) == pytest.approx(returns[s.symbol].std(ddof=1), abs=1e-8)
        assert s.adv_usd == ASSUMED_ADV_USD
    assert 0.005 < float(body[0].sigma_daily) < 0.05  # a daily volatility, not annual nor percent

    model = FactorModelContext.model_validate(ref.risk_model)
    assert model.symbols == SYMBOLS
    loadings, d = np.array(model.loadings), np.array(model.specific_var)
    k = loadings.shape[1]
    assert 1 <= k <= 5 and model.name.endswith(f"-{k}f")
    assert ref.explained_fraction >= 0.8 or k == 5  # as many factors as explain 80 %, at most 5
    # each security's own variance is kept exactly; the factors carry most of the co-movement
    cov = np.cov(returns.to_numpy(), rowvar=False, ddof=1)
    assert np.allclose((loadings**2).sum(axis=1) + d, np.diag(cov), rtol=1e-9, atol=1e-15)
    off = ~np.eye(len(SYMBOLS), dtype=bool)
    approx = loadings @ loadings.T
    assert np.corrcoef(approx[off], cov[off])[0, 1] > 0.8


def test_too_short_a_history_is_refused() -> None:
    with pytest.raises(ValueError, match="daily returns"):
        reference_data(load("sp500"), SYMBOLS, date(1990, 2, 1))
