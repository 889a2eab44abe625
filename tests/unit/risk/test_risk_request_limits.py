"""Request limits of the risk API (distinct symbols, weights, map sizes, scenario shapes), the
model copy the API measures on off the event loop, and the `stale_model` flag."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import numpy as np
import pytest
from pydantic import ValidationError

from trimtab.risk.analytics import MAX_SYMBOLS, TooManySymbols, prepare_stress, run_stress
from trimtab.risk.domain.assessment import BREACH_FLAGS, Limits, assess, model_is_stale
from trimtab.risk.domain.ewma import EwmaCovariance
from trimtab.risk.domain.model import RiskModel
from trimtab.risk.domain.scenarios import BUILTIN
from trimtab.risk.schemas import ScenarioIn, StressIn, WhatIfIn


def _model(days: int = 30) -> EwmaCovariance:
    rng = np.random.default_rng(3)
    m = EwmaCovariance()
    for _ in range(days):
        m.update({s: float(rng.normal(0, 0.01)) for s in "ABCDE" if rng.random() > 0.2})
    return m


def test_a_subset_reads_as_the_model_and_is_a_copy():
    m = _model()
    sub = m.subset(["E", "B", "NEW", "CASH"])
    names = ["B", "E", "NEW"]
    assert sub.symbols == ["B", "E"]
    np.testing.assert_array_equal(sub.covariance(names), m.covariance(names))
    np.testing.assert_array_equal(sub.co_observations(names), m.co_observations(names))
    assert sub.observations("B") == m.observations("B") and sub.observations("NEW") == 0
    before = sub.covariance(names)
    m.update({"B": 0.05, "E": -0.05})  # the consumer updates the model in place meanwhile
    np.testing.assert_array_equal(sub.covariance(names), before)


def test_stress_refuses_more_distinct_symbols_than_the_cap():
    model = RiskModel()
    ports = [{f"S{i}": Decimal("0.1")} for i in range(MAX_SYMBOLS + 1)]
    with pytest.raises(TooManySymbols, match=f"{MAX_SYMBOLS + 1} distinct symbols.*{MAX_SYMBOLS}"):
        prepare_stress(model, ports)
    # cash and zero weights are not symbols to measure
    ok = ports[:MAX_SYMBOLS] + [{"CASH": Decimal("1")}, {"ZERO": Decimal(0)}]
    assert len(prepare_stress(model, ok).symbols) == MAX_SYMBOLS
    result, symbols, _ = run_stress(model, [BUILTIN[5]], ports[:3], Limits())  # market -10 %
    assert symbols == ("S0", "S1", "S2") and result.pnl.shape == (3, 1)


@pytest.mark.parametrize("weights", [{"KO": "1e400"}, {"KO": "-0.1"}, {"KO": "0.6", "PG": "0.5"}])
def test_stress_weights_follow_the_what_if_rules(weights):
    with pytest.raises(ValidationError):
        StressIn(portfolios=[{"id": "p", "weights": weights}])
    with pytest.raises(ValidationError):
        WhatIfIn(weights=weights)
    assert StressIn(portfolios=[{"id": "p", "weights": {"KO": "0.6", "CASH": "0.4"}}])


def test_request_maps_are_bounded():
    many = {f"S{i}": "0.0001" for i in range(1001)}
    sectors = {f"S{i}": "Energy" for i in range(2001)}
    for bad in ({"target_weights": many}, {"sectors": sectors}, {"prices_usd": {k: "1" for k in sectors}},
                {"adv_shares": {k: "1" for k in sectors}}):
        with pytest.raises(ValidationError):
            WhatIfIn(weights={"A": "0.5"}, **bad)
    with pytest.raises(ValidationError):
        StressIn(portfolios=[{"id": "p", "weights": {"A": "0.5"}}], sectors=sectors)


def test_a_market_scenario_is_keyed_market_in_the_request():
    with pytest.raises(ValidationError, match='keyed "market"'):
        ScenarioIn(scenario_id="m", name="m", kind="market", shocks={"spx": "-0.1"})
    with pytest.raises(ValidationError, match='keyed "market"'):
        ScenarioIn(scenario_id="m", name="m", kind="market", shocks={"market": "-0.1", "x": "-0.1"})
    assert ScenarioIn(scenario_id="m", name="m", kind="market", shocks={"market": "-0.1"})


def test_model_is_stale_after_more_than_n_trading_days():
    limits = Limits(stale_model_days=10)
    fri = date(2024, 3, 1)
    assert not model_is_stale(fri, date(2024, 3, 4), limits)  # Monday after: 1 trading day
    assert not model_is_stale(fri, date(2024, 3, 15), limits)  # 10 trading days
    assert model_is_stale(fri, date(2024, 3, 18), limits)  # 11
    assert not model_is_stale(fri, date(2024, 2, 1), limits)  # a snapshot older than the model
    assert not model_is_stale(None, fri, limits)  # no returns yet: only if asked
    assert model_is_stale(None, fri, Limits(stale_model_if_empty=True))


def test_a_stale_model_is_flagged_not_breached_and_not_auto_approvable():
    m = _model()
    w = {"A": Decimal("0.2"), "B": Decimal("0.2")}
    assert assess(m, w, w, Limits()).flags == ()
    a = assess(m, w, w, Limits(), stale_model=True)
    assert a.flags == ("stale_model", "no_auto_approve") and a.breaches == ()
    assert "stale_model" not in BREACH_FLAGS
    heavy = assess(m, w, {"A": Decimal("0.5")}, Limits(), stale_model=True)
    assert heavy.flags[0] == "stale_model" and "concentration" in heavy.breaches
    assert heavy.flags[-1] == "no_auto_approve" and heavy.flags.count("no_auto_approve") == 1
