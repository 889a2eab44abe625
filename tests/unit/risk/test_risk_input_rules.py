"""Input rules of the risk API that keep bad input out of the tables and the float arithmetic
(limits with the columns' places, bounded shocks, finite questionnaires, bounded liquidity
inputs), and the tolerance of what may already be stored (rows from before the rules)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from trimtab.risk.analytics import DAYS, fixed, pct, unit
from trimtab.risk.domain.history import ReferenceHistory
from trimtab.risk.domain.scenarios import BUILTIN, Scenario
from trimtab.risk.models import recorded_by
from trimtab.risk.scenario_store import pick_scenarios, runnable, stored
from trimtab.risk.schemas import (
    RiskProfileIn,
    RiskProfileOut,
    ScenarioIn,
    StressIn,
    WhatIfIn,
    finite_json,
)
from trimtab.shared.errors import Invalid


@pytest.mark.parametrize("limits", [{"concentration_limit": "0.00001"}, {"drawdown_limit_pct": "0.00001"},
                                    {"drawdown_limit_pct": 5e-324}, {"concentration_limit": "1E-300"}])
def test_a_limit_with_more_places_than_its_column_is_refused(limits):
    with pytest.raises(ValidationError, match="decimal places"):
        RiskProfileIn(tolerance_score=50, **limits)


def test_a_limit_with_trailing_zeros_is_the_same_number():
    p = RiskProfileIn(tolerance_score=50, concentration_limit="0.25000000", drawdown_limit_pct="1e2")
    assert p.concentration_limit == Decimal("0.25") and p.drawdown_limit_pct == 100


def test_the_output_reads_a_limit_stored_as_zero():
    out = RiskProfileOut(tolerance_score=50, concentration_limit=Decimal("0.0000"),
                         drawdown_limit_pct=Decimal("0.0000"), questionnaire=None, account_id="a",
                         tolerance_downside_1y_pct=Decimal("50.0000"),
                         tolerance_vol_annual_pct=Decimal("42.1"), updated_by="x",
                         updated_at="2024-01-01T00:00:00Z")
    body = out.model_dump(mode="json")
    assert body["concentration_limit"] == "0.0000" and body["drawdown_limit_pct"] == "0.0000"


@pytest.mark.parametrize("answers", [{"a": float("nan")}, {"a": [1, {"b": float("inf")}]},
                                     {"a": -float("inf")}, {"\ud800": 1}, {"a": ["\udc00"]}])
def test_a_questionnaire_jsonb_cannot_hold_is_refused(answers):
    with pytest.raises(ValidationError):
        RiskProfileIn(tolerance_score=50, questionnaire=answers)


def test_finite_json_walks_deep_documents_without_recursion():
    doc: list = []  # type: ignore[type-arg]
    inner = doc
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]
    assert finite_json({"deep": doc}) == {"deep": doc}
    inner.append(float("nan"))
    with pytest.raises(ValueError, match="finite"):
        finite_json({"deep": doc})


@pytest.mark.parametrize(("kind", "shocks"), [
    ("market", {"market": "1e300"}), ("market", {"market": "123456789012345678901234567890"}),
    ("market", {"market": "10.000001"}), ("factor", {"market": "1e300"}),
    ("sector", {"Energy": "1e300"}), ("vector", {"A": "-1.000001"}), ("vector", {"A": "0.1234567"}),
    ("vector", {"A": 5e-324}),
])
def test_shocks_are_bounded_returns_with_six_places(kind, shocks):
    with pytest.raises(ValidationError, match=r"from -1 \(-100 %\) to 10 \(\+1,000 %\)"):
        ScenarioIn(scenario_id="x", name="x", kind=kind, shocks=shocks)


def test_shocks_at_the_bounds_are_accepted():
    sc = ScenarioIn(scenario_id="x", name="x", kind="vector",
                    shocks={"A": "10", "B": "-1", "C": "-0.123456", "D": "0.5000000000"})
    assert sc.shocks["D"] == Decimal("0.5")


def test_the_domain_refuses_shocks_out_of_range():
    with pytest.raises(ValueError, match="from -1 to 10"):
        Scenario("m", "m", "market", shocks={"market": 1e300})
    with pytest.raises(ValueError, match="unknown scenario kind"):
        Scenario("m", "m", "bogus", shocks={"market": -0.1})  # type: ignore[arg-type]


def _row(sid: str, kind: str, spec: object) -> SimpleNamespace:
    return SimpleNamespace(scenario_id=sid, name=sid, kind=kind, spec=spec, description="")


def test_a_stored_row_that_cannot_run_is_loaded_as_unusable_with_why():
    good = stored(_row("ok", "market", {"shocks": {"market": "-0.15"}}))
    assert good.scenario is not None and good.problem is None
    for row in (_row("h2", "market", {"shocks": {"market": "1E+300"}}),
                _row("s2", "sector", {"shocks": {"Energy": "123456789012345678901234567890"}}),
                _row("bad-date", "historical", {"start": "2020-13-45", "end": "2021-01-01"}),
                _row("no-dict", "vector", ["not", "a", "spec"]),
                _row("not-a-number", "vector", {"shocks": {"A": "abc"}}),
                _row("kind", "bogus", {"shocks": {"A": "-0.1"}})):
        st = stored(row)
        assert st.scenario is None and st.problem and "cannot run" in st.problem, row


def test_picking_leaves_unusable_scenarios_out_by_default_and_refuses_them_by_name():
    tenant = [stored(_row("h2", "market", {"shocks": {"market": "1E+300"}})),
              stored(_row("ok", "market", {"shocks": {"market": "-0.15"}}))]
    chosen, skipped = pick_scenarios(None, tenant)
    assert [s.scenario_id for s in chosen] == [*(b.scenario_id for b in BUILTIN), "ok"]
    assert list(skipped) == ["h2"] and "from -1 to 10" in skipped["h2"]
    assert [s.scenario_id for s in pick_scenarios(["ok"], tenant)[0]] == ["ok"]
    with pytest.raises(Invalid, match="h2"):
        pick_scenarios(["ok", "h2"], tenant)
    with pytest.raises(Invalid, match="unknown scenario id"):
        pick_scenarios(["nope"], tenant)


def _history() -> ReferenceHistory:
    dates = np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-01-07"))
    prices = np.array([[100, 50], [110, 50], [88, 45], [99, 40], [90, 44], [95, 45.0]])
    market = np.array([1000, 1050, 950, 900, 920, 940.0])
    return ReferenceHistory(dates, ("A", "B"), prices, market)


def test_scenarios_the_history_cannot_shock_are_left_out_or_refused():
    h = _history()
    fx = Scenario("fx", "fx", "factor", shocks={"NOSUCH": -0.1})
    old = Scenario("old", "old", "historical", date(1990, 1, 1), date(1990, 2, 1))
    ok = Scenario("ok", "ok", "market", shocks={"market": -0.1})
    chosen, skipped = runnable([fx, old, ok], {"h2": "why"}, h, explicit=False)
    assert chosen == [ok] and set(skipped) == {"h2", "fx", "old"} and "NOSUCH" in skipped["fx"]
    with pytest.raises(Invalid, match="fx"):
        runnable([fx, ok], {}, h, explicit=True)


def test_stress_with_an_empty_scenario_list_is_refused():
    with pytest.raises(ValidationError):
        StressIn(portfolios=[{"id": "p", "weights": {"A": "0.5"}}], scenario_ids=[])
    with pytest.raises(ValidationError):
        StressIn(portfolios=[{"id": "p", "weights": {"A": "0.5"}}], scenario_ids=["x" * 65])
    assert WhatIfIn(weights={"A": "0.5"}, scenario_ids=[]).scenario_ids == []


@pytest.mark.parametrize("extra", [
    {"account_value_usd": "1e400"}, {"account_value_usd": "1e-400"}, {"account_value_usd": "0"},
    {"prices_usd": {"A": "1e-400"}}, {"prices_usd": {"A": "0"}}, {"prices_usd": {"A": "1e10"}},
    {"adv_shares": {"A": "1e-300"}}, {"adv_shares": {"A": "0"}}, {"adv_shares": {"A": "-1"}},
    {"adv_shares": {"A": "1e14"}}, {"participation": "1e-400"}, {"participation": "1.5"},
])
def test_liquidity_inputs_are_positive_and_of_sensible_size(extra):
    with pytest.raises(ValidationError):
        WhatIfIn(weights={"A": "0.5"}, **extra)


def test_decimals_of_any_finite_float_are_reported_not_an_error():
    assert pct(0.123456789) == Decimal("12.3457") and unit(5e-324) == Decimal("0.000000")
    assert pct(1e300) == Decimal("1e302") and fixed(5e29, DAYS) == Decimal("5e29")
    assert pct(float("inf")) is None and fixed(float("nan"), DAYS) is None


def test_who_changed_a_row_is_cut_to_the_column():
    assert recorded_by("s" * 250) == "s" * 200 and recorded_by("me") == "me"
