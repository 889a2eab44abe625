"""The `risk.assessed.v1` payload: the optional measures (score, tolerance, VaR/CVaR, tracking
error, concentration, breaches, limits) equal the assessment's numbers recomputed by hand, and an
event without them (an older producer's) validates and serializes exactly as before."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pytest

from trimtab.risk.analytics import measures_out
from trimtab.risk.assessed import assessed_event, snapshot_value_usd
from trimtab.risk.domain.assessment import BREACH_FLAGS, Limits, assess
from trimtab.risk.domain.ewma import EwmaCovariance
from trimtab.shared.events import (
    AccountSnapshot,
    PositionSnapshot,
    RebalanceProposed,
    RiskAssessed,
    RiskModelInfo,
    SecuritySnapshot,
    SolverInfo,
)

Z95 = 1.6448536269514722
PDF95 = math.exp(-Z95 * Z95 / 2) / math.sqrt(2 * math.pi)
SYMBOLS = ("AAA", "BBB", "CCC")
SECTORS = {"AAA": "Information Technology", "BBB": "Information Technology", "CCC": "Energy"}
INFO = RiskModelInfo(name="ewma-riskmetrics", version="7", window_start=date(2024, 1, 2),
                     window_end=date(2024, 5, 1), observations=80, halflife_days=Decimal("11.2"))
OLD_KEYS = {"proposal_id", "account_id", "pre_vol_annual_pct", "post_vol_annual_pct", "model", "flags"}
NEW_KEYS = set(RiskAssessed.model_fields) - OLD_KEYS


@pytest.fixture(scope="module")
def model() -> EwmaCovariance:
    rng = np.random.default_rng(5)
    common = rng.normal(0, 0.01, (80, 1))
    returns = common + rng.normal(0, 1, (80, 3)) * np.array([0.008, 0.02, 0.012])
    return EwmaCovariance.from_panel(SYMBOLS, returns)


def _proposal(prices: dict[str, str], shares: dict[str, str], cash: str, post: dict[str, str],
              targets: dict[str, str], cost: str = "0") -> RebalanceProposed:
    value = Decimal(cash) + sum(Decimal(shares[s]) * Decimal(prices[s]) for s in shares)
    snap = AccountSnapshot(
        account_id="acct-1", cash_usd=Decimal(cash),
        positions=[PositionSnapshot(symbol=s, shares=Decimal(q)) for s, q in shares.items()],
        targets={s: Decimal(w) for s, w in targets.items()},
        securities=[SecuritySnapshot(symbol=s, price_usd=Decimal(p)) for s, p in prices.items()],
        as_of=datetime(2024, 5, 2, tzinfo=UTC))
    pre = {s: (Decimal(shares.get(s, "0")) * Decimal(prices[s]) / value).quantize(Decimal("0.000001"))
           for s in prices}
    return RebalanceProposed(
        proposal_id=uuid.uuid4(), account_id="acct-1", snapshot=snap, snapshot_hash="sha256:x",
        orders=[], pre_weights=pre, post_weights={s: Decimal(w) for s, w in post.items()},
        objective={}, est_cost_usd=Decimal(cost), est_tax_usd=Decimal(0),
        solver=SolverInfo(solver="t", status="optimal", solve_ms=Decimal(1), cvxpy_version="-",
                          optimizer_version="-"))


def _event(model: EwmaCovariance, p: RebalanceProposed, limits: Limits = Limits(),
           tolerance: int | None = None):  # type: ignore[no-untyped-def]
    result = assess(model, p.pre_weights, p.post_weights, limits, target=p.snapshot.targets or None,
                    sectors=SECTORS, tolerance=tolerance)
    assert result.pre is not None and result.post is not None
    return result, assessed_event(p, result, INFO, limits, measures_out(result.pre),
                                  measures_out(result.post))


def _by_hand(model: EwmaCovariance, weights: dict[str, Decimal]) -> float:
    """Daily volatility w' S w of the model's own covariance (no prior: every symbol is known)."""
    w = np.array([float(weights.get(s, 0)) for s in SYMBOLS])
    return math.sqrt(float(w @ model.covariance(list(SYMBOLS)) @ w))


def test_the_measures_on_the_event_equal_the_assessment_by_hand(model):
    # 600 AAA at 50 + 100 BBB at 200 + 20,000 cash = 70,000; the proposal moves into CCC
    p = _proposal({"AAA": "50", "BBB": "200", "CCC": "25"}, {"AAA": "600", "BBB": "100"}, "20000",
                  post={"AAA": "0.30", "BBB": "0.20", "CCC": "0.40"},
                  targets={"AAA": "0.3", "BBB": "0.3", "CCC": "0.3"}, cost="12.34")
    result, ev = _event(model, p, tolerance=10)
    value = Decimal("70000")
    assert snapshot_value_usd(p.snapshot) == value
    assert ev.pre_value_usd == Decimal("70000.00") and ev.post_value_usd == Decimal("69987.66")

    for side, weights, base in (("pre", p.pre_weights, value), ("post", p.post_weights, value - Decimal("12.34"))):
        sd = _by_hand(model, dict(weights))
        vol_a = sd * math.sqrt(252)
        assert getattr(ev, f"{side}_score") == max(1, min(99, round(100 * (1 - math.exp(-Z95 * vol_a)))))
        assert float(getattr(ev, f"{side}_var_95_1d_pct")) == pytest.approx(100 * Z95 * sd, abs=5e-5)
        assert float(getattr(ev, f"{side}_var_95_1d_usd")) == pytest.approx(Z95 * sd * float(base), abs=0.006)
        assert float(getattr(ev, f"{side}_cvar_95_1d_usd")) == pytest.approx(
            sd * PDF95 / 0.05 * float(base), abs=0.006)
        d = np.array([float(weights.get(s, 0)) - float(p.snapshot.targets[s]) for s in SYMBOLS])
        te = math.sqrt(float(d @ model.covariance(list(SYMBOLS)) @ d) * 252)
        assert float(getattr(ev, f"{side}_tracking_error_annual_pct")) == pytest.approx(100 * te, abs=5e-5)
    assert ev.post_var_95_1d_usd.as_tuple().exponent == -2 and ev.pre_var_95_1d_pct.as_tuple().exponent == -4

    assert ev.tolerance_score == 10
    assert ev.post_largest_symbol == "CCC" and ev.post_largest_weight == Decimal("0.400000")
    # AAA + BBB = 50 % technology, CCC 40 % energy
    assert ev.post_largest_sector == "Information Technology"
    assert ev.post_largest_sector_weight == Decimal("0.500000")
    # from 71 % to 90 % invested: volatility rises by more than 2 points; 40 % in CCC is over the
    # 35 % limit; the score is above a tolerance of 10 and rises
    assert (_by_hand(model, dict(p.post_weights)) - _by_hand(model, dict(p.pre_weights))) * math.sqrt(252) > 0.02
    assert ev.post_score > 10 and ev.post_score > ev.pre_score  # type: ignore[operator]
    assert ev.breaches == ["vol_increase", "concentration", "above_tolerance"]
    assert ev.breaches == [f for f in ev.flags if f in BREACH_FLAGS] == list(result.breaches)
    assert ev.flags[-1] == "no_auto_approve"
    assert ev.limits == {"vol_increase_limit_pct": Decimal("2"), "concentration_limit": Decimal("0.35"),
                         "sector_limit": Decimal("0.5")}
    # the event and the stored measures agree to the digit
    assert ev.post_var_95_1d_pct == measures_out(result.post).parametric_pct["var_95_1d"]  # type: ignore[union-attr]
    assert RiskAssessed.model_validate_json(ev.model_dump_json()) == ev


def test_a_clean_proposal_has_empty_breaches_and_the_limits_it_was_held_to(model):
    p = _proposal({"AAA": "50", "BBB": "200", "CCC": "25"}, {"AAA": "600", "BBB": "100"}, "20000",
                  post={"AAA": "0.30", "BBB": "0.30", "CCC": "0.30"}, targets={})
    limits = Limits(concentration_limit=Decimal("0.3"), vol_increase_pct=Decimal("50"),
                    sector_limit=Decimal("0.65"))
    _, ev = _event(model, p, limits)
    assert ev.breaches == [] and ev.tolerance_score is None
    assert ev.limits["concentration_limit"] == Decimal("0.3")  # type: ignore[index]
    assert ev.limits["vol_increase_limit_pct"] == Decimal("50")  # type: ignore[index]
    assert ev.limits["sector_limit"] == Decimal("0.65")  # type: ignore[index]
    body = json.loads(ev.model_dump_json())
    assert body["breaches"] == [] and "tolerance_score" not in body
    # no targets: no tracking error, and the keys are absent rather than null
    assert "pre_tracking_error_annual_pct" not in body and "post_tracking_error_annual_pct" not in body


def test_an_unpriced_position_leaves_the_usd_figures_out(model):
    p = _proposal({"AAA": "50"}, {"AAA": "600"}, "20000", post={"AAA": "0.2", "BBB": "0.2"}, targets={})
    p = p.model_copy(update={"snapshot": p.snapshot.model_copy(update={
        "positions": [*p.snapshot.positions, PositionSnapshot(symbol="BBB", shares=Decimal(3))]})})
    _, ev = _event(model, p)
    assert snapshot_value_usd(p.snapshot) is None
    assert ev.pre_var_95_1d_usd is None and ev.post_cvar_95_1d_usd is None and ev.pre_value_usd is None
    assert ev.pre_var_95_1d_pct is not None and ev.pre_score is not None
    body = json.loads(ev.model_dump_json())
    assert not {k for k in body if k.endswith("_usd")}


def test_an_older_producers_event_validates_and_serializes_as_before():
    old = {"proposal_id": str(uuid.uuid4()), "account_id": "a", "pre_vol_annual_pct": "14.3000",
           "post_vol_annual_pct": "13.1000",
           "model": {"name": "ewma", "version": "1", "window_start": None, "window_end": None,
                     "observations": 0, "halflife_days": None},
           "flags": ["prior_used:X"]}
    ev = RiskAssessed.model_validate(old)
    assert all(getattr(ev, k) is None for k in NEW_KEYS)  # absent, not zero or "no breach"
    assert ev.model_dump(mode="json") == old
    assert json.loads(ev.model_dump_json()) == old and set(json.loads(ev.model_dump_json())) == OLD_KEYS
    assert RiskAssessed.model_validate(json.loads(ev.model_dump_json())) == ev


def test_new_fields_are_bounded_and_named_with_units():
    base = dict(proposal_id=uuid.uuid4(), account_id="a", pre_vol_annual_pct=Decimal(1),
                post_vol_annual_pct=Decimal(1), model=INFO)
    for bad in (0, 100):
        with pytest.raises(ValueError):
            RiskAssessed(**base, post_score=bad)
    numeric = {k for k, f in RiskAssessed.model_fields.items() if k in NEW_KEYS - {"limits"} and "Decimal" in str(f.annotation)}
    assert numeric and all(k.endswith(("_pct", "_usd", "_weight")) for k in numeric), numeric
