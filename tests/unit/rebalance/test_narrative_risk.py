"""The advisor narrative states what the risk service measured: the risk score before and after
against the client's tolerance, and the one-day 95 % VaR change in dollars, with the event's
numbers exactly; an event without those measures (an older producer) reads as before."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from trimtab.rebalance import explain, from_snapshot, propose
from trimtab.rebalance.narrative import advisor_narrative
from trimtab.shared.events import RiskAssessed, RiskModelInfo

from .conftest import drifted_account

MONEY = r"-?\$[\d,]+\.\d\d"


def money(s: str) -> Decimal:
    return Decimal(s.replace("$", "").replace(",", ""))


@pytest.fixture(scope="module")
def proposal():  # type: ignore[no-untyped-def]
    return propose(drifted_account(5, seed=3))


def _risk(p, **measured) -> RiskAssessed:  # type: ignore[no-untyped-def]
    return RiskAssessed(proposal_id=p.proposal_id, account_id=p.account_id,
                        pre_vol_annual_pct=Decimal("14.3000"), post_vol_annual_pct=Decimal("15.1000"),
                        model=RiskModelInfo(name="ewma-riskmetrics", version="9"),
                        flags=list(measured.pop("flags", [])), **measured)


def _risk_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("Risk ")]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(("pre", "post", "tol", "side"), [(18, 23, 20, "above"), (24, 19, 20, "within"),
                                                          (20, 20, 20, "within")])
def test_scores_tolerance_and_var_in_the_text_are_the_events(proposal, pre, post, tol, side):  # type: ignore[no-untyped-def]
    risk = _risk(proposal, pre_score=pre, post_score=post, tolerance_score=tol,
                 pre_var_95_1d_usd=Decimal("3712.48"), post_var_95_1d_usd=Decimal("4101.07"),
                 pre_var_95_1d_pct=Decimal("1.4850"), post_var_95_1d_pct=Decimal("1.6405"),
                 breaches=["above_tolerance"] if side == "above" else [],
                 flags=["above_tolerance", "no_auto_approve"] if side == "above" else [])
    line = _risk_line(advisor_narrative(from_snapshot(proposal.snapshot), proposal, [], risk))
    m = re.search(r"risk score \(1-99\) (\d+) -> (\d+), (above|within) the client's tolerance of (\d+)", line)
    assert m, line
    assert (int(m[1]), int(m[2]), int(m[4])) == (risk.pre_score, risk.post_score, risk.tolerance_score)
    assert m[3] == side
    v = re.search(rf"1-day 95% VaR ({MONEY}) -> ({MONEY}) \((\+?{MONEY})\)", line)
    assert v, line
    assert money(v[1]) == risk.pre_var_95_1d_usd and money(v[2]) == risk.post_var_95_1d_usd
    assert money(v[3].lstrip("+")) == risk.post_var_95_1d_usd - risk.pre_var_95_1d_usd  # type: ignore[operator]
    assert v[3].startswith("+")  # a rise is signed
    assert "volatility 14.3000% -> 15.1000%" in line


def test_a_fall_in_var_is_negative_and_a_missing_tolerance_is_not_invented(proposal):  # type: ignore[no-untyped-def]
    risk = _risk(proposal, pre_score=30, post_score=25, pre_var_95_1d_usd=Decimal("12345.67"),
                 post_var_95_1d_usd=Decimal("10000.00"))
    line = _risk_line(advisor_narrative(from_snapshot(proposal.snapshot), proposal, [], risk))
    assert "risk score (1-99) 30 -> 25;" in line and "tolerance" not in line
    assert "1-day 95% VaR $12,345.67 -> $10,000.00 (-$2,345.67)" in line


def test_without_dollars_the_var_is_stated_in_percent_of_value(proposal):  # type: ignore[no-untyped-def]
    risk = _risk(proposal, pre_var_95_1d_pct=Decimal("1.2345"), post_var_95_1d_pct=Decimal("0.9876"))
    line = _risk_line(advisor_narrative(from_snapshot(proposal.snapshot), proposal, [], risk))
    m = re.search(r"1-day 95% VaR ([\d.]+)% -> ([\d.]+)% of value", line)
    assert m and Decimal(m[1]) == risk.pre_var_95_1d_pct and Decimal(m[2]) == risk.post_var_95_1d_pct
    assert "score" not in line and "$" not in line


def test_an_event_without_the_measures_reads_as_before(proposal):  # type: ignore[no-untyped-def]
    risk = _risk(proposal, flags=["prior_used:S01"])
    line = _risk_line(advisor_narrative(from_snapshot(proposal.snapshot), proposal, [], risk))
    assert line == "Risk (ewma-riskmetrics 9): annualized volatility 14.3000% -> 15.1000%; flags: prior_used:S01."


def test_the_explanation_carries_the_measured_risk(proposal):  # type: ignore[no-untyped-def]
    risk = _risk(proposal, pre_score=22, post_score=21, tolerance_score=25,
                 pre_var_95_1d_usd=Decimal("5000.00"), post_var_95_1d_usd=Decimal("4890.10"))
    line = _risk_line(explain(proposal, risk=risk).narrative_advisor)
    assert "risk score (1-99) 22 -> 21, within the client's tolerance of 25" in line
    assert "1-day 95% VaR $5,000.00 -> $4,890.10 (-$109.90)" in line
