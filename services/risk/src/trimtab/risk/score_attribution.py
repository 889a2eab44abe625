"""The risk-score attribution of an account (`GET /v1/accounts/{id}/risk/attribution`): glue
between the stored assessment, today's model and `domain.score_shap`, and its response model."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel

from trimtab.shared.events import RiskModelInfo
from trimtab.shared.money import DecimalStr

from .analytics import floats
from .domain.assessment import Limits, risk_inputs
from .domain.model import RiskModel
from .domain.profile import MIN_HISTORY_DAYS
from .domain.score_shap import attribute_score, sample_covariance

Q = Decimal("0.0001")


class ScoreContributionOut(BaseModel):
    feature: str
    kind: Literal["exposure", "condition"]
    #: the exposure's weight (a condition: 1)
    weight: DecimalStr
    #: percentage points of the 95 % one-year downside (the score before rounding)
    contribution_pct: DecimalStr


class ScoreAttributionOut(BaseModel):
    account_id: str
    proposal_id: uuid.UUID
    portfolio: Literal["current", "proposed"]
    score: int
    downside_1y_pct: DecimalStr
    vol_annual_pct: DecimalStr
    #: the same portfolio's downside under long-window average conditions (None: too little history)
    baseline_downside_1y_pct: DecimalStr | None
    #: largest first; they add up to downside_1y_pct (all cash scores 0 before the 1..99 clamp)
    contributions: list[ScoreContributionOut]
    method: str
    efficiency_error_pct: DecimalStr
    model: RiskModelInfo


def _q(x: float) -> Decimal:
    return Decimal(repr(float(x))).quantize(Q)


def attribution(model: RiskModel, weights: Mapping[str, Decimal], limits: Limits) -> dict[str, object]:
    """The attribution of `weights` under `model` (the covariance the score itself uses: priors,
    shrinkage), with the conditions feature when every held symbol has enough history."""
    w = floats(weights)
    view, inputs = risk_inputs(model.covariance, list(w), limits,
                               model.recent_returns(list(w), limits.history_days))
    baseline = None
    if w and set(w) <= set(inputs.history_symbols) and len(inputs.log_returns) >= MIN_HISTORY_DAYS:
        order = [inputs.history_symbols.index(s) for s in view.symbols]
        baseline = sample_covariance(inputs.log_returns[:, order])
    a = attribute_score(w, view.symbols, view.cov_daily, baseline_cov_daily=baseline)
    rows = sorted(zip(a.features, a.kinds, a.weights, a.contributions_pct, strict=True),
                  key=lambda r: (-abs(r[3]), r[0]))
    return {
        "score": a.score, "downside_1y_pct": _q(a.downside_pct), "vol_annual_pct": _q(100 * a.vol_annual),
        "baseline_downside_1y_pct": None if a.baseline_downside_pct is None else _q(a.baseline_downside_pct),
        "contributions": [ScoreContributionOut(feature=f, kind=k, weight=_q(x), contribution_pct=_q(c))  # type: ignore[arg-type]
                          for f, k, x, c in rows],
        "method": a.method, "efficiency_error_pct": Decimal(f"{a.efficiency_error_pct:.3e}"),
    }
