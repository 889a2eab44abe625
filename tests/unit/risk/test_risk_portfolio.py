"""Portfolio volatility by hand, priors, PSD repair, flags, and the what-if input rules."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from pydantic import ValidationError

from trimtab.risk.domain.assessment import Limits, assess, to_pct
from trimtab.risk.domain.ewma import EwmaCovariance
from trimtab.risk.domain.portfolio import Prior, RiskView, nearest_psd_correlation, risk_view
from trimtab.risk.schemas import WhatIfIn

SQRT252 = math.sqrt(252)


def test_two_asset_volatility_by_hand():
    # sigma 1 %/day and 2 %/day, correlation 0.5, weights 60/40:
    # var = .36 * 1e-4 + .16 * 4e-4 + 2 * .6 * .4 * .5 * .01 * .02 = 1.48e-4 per day
    cov = np.array([[1e-4, 1e-4], [1e-4, 4e-4]])
    view = RiskView(("A", "B"), cov, ())
    assert view.vol_annual({"A": 0.6, "B": 0.4}) == pytest.approx(math.sqrt(1.48e-4) * SQRT252)
    assert to_pct(view.vol_annual({"A": 0.6, "B": 0.4})) == Decimal("19.3122")  # sqrt(1.48e-4) * sqrt(252) = 0.193122
    # Cash has no variance: half in cash halves the volatility.
    assert view.vol_annual({"A": 0.3, "B": 0.2, "CASH": 0.5}) == pytest.approx(
        view.vol_annual({"A": 0.6, "B": 0.4}) / 2)


def test_model_path_by_hand_one_day_of_returns():
    m = EwmaCovariance(0.94)
    m.update({"A": 0.01, "B": -0.02})  # one day: the covariance is r r' exactly
    view = risk_view(m, ["A", "B"], Prior(), min_observations=1)
    assert view.prior_used == ()
    # w.r = .6 * .01 - .4 * .02 = -0.002 a day
    assert view.vol_annual({"A": 0.6, "B": 0.4}) == pytest.approx(0.002 * SQRT252)


def test_unknown_symbols_get_the_prior():
    m = EwmaCovariance(0.94)
    view = risk_view(m, ["NEW1", "NEW2"], Prior(0.20, 0.3), min_observations=5)
    assert view.prior_used == ("NEW1", "NEW2")
    assert view.vol_annual({"NEW1": 1.0}) == pytest.approx(0.20)
    # two 20 % assets at 0.3 correlation, 50/50: 20 % * sqrt(.25 + .25 + 2 * .25 * .3)
    assert view.vol_annual({"NEW1": 0.5, "NEW2": 0.5}) == pytest.approx(0.20 * math.sqrt(0.65))


def test_known_symbol_keeps_its_vol_next_to_an_unknown_one():
    rng = np.random.default_rng(0)
    m = EwmaCovariance(0.94)
    for r in rng.normal(0, 0.01, 60):
        m.update({"OLD": float(r)})
    view = risk_view(m, ["OLD", "NEW"], Prior(0.20, 0.3), min_observations=10)
    assert view.prior_used == ("NEW",)
    assert view.vol_annual_of("OLD") == pytest.approx(m.daily_vol("OLD") * SQRT252)
    corr = view.cov_daily[0, 1] / math.sqrt(view.cov_daily[0, 0] * view.cov_daily[1, 1])
    assert corr == pytest.approx(0.3)


def test_inconsistent_pairwise_correlations_are_repaired_to_psd():
    bad = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    assert np.linalg.eigvalsh(bad).min() < 0
    fixed = nearest_psd_correlation(bad)
    assert np.linalg.eigvalsh(fixed).min() > -1e-12
    np.testing.assert_allclose(np.diag(fixed), 1.0)
    np.testing.assert_allclose(fixed, fixed.T)


def _model_with(vols: dict[str, float], days: int = 80) -> EwmaCovariance:
    rng = np.random.default_rng(1)
    m = EwmaCovariance(0.94)
    for _ in range(days):
        m.update({s: float(rng.normal(0, v)) for s, v in vols.items()})
    return m


def test_flags_vol_increase_concentration_and_prior():
    m = _model_with({"BOND": 0.002, "TECH": 0.03})
    limits = Limits(min_observations=10)
    a = assess(m, {"BOND": Decimal("0.9"), "CASH": Decimal("0.1")},
               {"BOND": Decimal("0.3"), "TECH": Decimal("0.5"), "NEWCO": Decimal("0.1")}, limits)
    assert a.post_vol_annual_pct > a.pre_vol_annual_pct + 2
    assert a.flags == ("prior_used:NEWCO", "vol_increase", "concentration", "no_auto_approve")
    assert a.breaches == ("vol_increase", "concentration")
    assert a.max_post_symbol == "TECH" and a.max_post_weight == Decimal("0.5")
    calm = assess(m, {"BOND": Decimal("0.5"), "TECH": Decimal("0.2")},
                  {"BOND": Decimal("0.34"), "TECH": Decimal("0.2"), "CASH": Decimal("0.46")}, limits)
    assert calm.flags == () and calm.breaches == ()
    assert calm.pre_vol_annual_pct.as_tuple().exponent == -4


def test_what_if_rejects_negative_weights_and_overfunding():
    assert WhatIfIn(weights={"A": Decimal("0.6"), "B": Decimal("0.4")}).weights["A"] == Decimal("0.6")
    with pytest.raises(ValidationError, match="negative"):
        WhatIfIn(weights={"A": Decimal("-0.1")})
    with pytest.raises(ValidationError, match="more than 1"):
        WhatIfIn(weights={"A": Decimal("0.7"), "B": Decimal("0.31")})
